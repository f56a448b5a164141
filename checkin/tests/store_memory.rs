//! The store conformance suite against [`MemoryStore`].

use std::sync::Arc;

use magicpush_checkin::store::{MemoryStore, Store};

magicpush_checkin::store_conformance!((Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()));
