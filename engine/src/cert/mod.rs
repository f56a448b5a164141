//! The MDM push certificate (being written).
