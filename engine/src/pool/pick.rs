//! Which connection gets the next push.

/// A connection's load as the dispatcher sees it at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLoad {
    /// Open and taking new streams (not connecting, draining or closed).
    pub open: bool,
    /// Streams sent and not yet answered.
    pub in_flight: usize,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, capped by the pool's own limit.
    pub max_streams: usize,
}

impl SlotLoad {
    fn has_room(&self) -> bool {
        self.open && self.in_flight < self.max_streams
    }
}

/// The least-loaded open connection with room for one more stream, by fraction of its limit
/// in use (ties: fewer in flight, then lower index). `avoid` — the connection a retried push
/// failed on — is taken only when no other connection has room.
pub fn pick(loads: &[SlotLoad], avoid: Option<usize>) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut fallback = None;
    for (i, load) in loads.iter().enumerate() {
        if !load.has_room() {
            continue;
        }
        if Some(i) == avoid {
            fallback = Some(i);
            continue;
        }
        // Compare in_flight/max without floats: a/b < c/d  <=>  a*d < c*b.
        let better = match best {
            None => true,
            Some(j) => {
                let b = loads[j];
                let lhs = load.in_flight as u128 * b.max_streams as u128;
                let rhs = b.in_flight as u128 * load.max_streams as u128;
                lhs < rhs || (lhs == rhs && load.in_flight < b.in_flight)
            }
        };
        if better {
            best = Some(i);
        }
    }
    best.or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(in_flight: usize, max: usize) -> SlotLoad {
        SlotLoad {
            open: true,
            in_flight,
            max_streams: max,
        }
    }

    #[test]
    fn least_loaded_wins() {
        let loads = [open(5, 10), open(2, 10), open(3, 10)];
        assert_eq!(pick(&loads, None), Some(1));
    }

    #[test]
    fn load_is_relative_to_each_limit() {
        // 50 of 500 is lighter than 5 of 10.
        let loads = [open(5, 10), open(50, 500)];
        assert_eq!(pick(&loads, None), Some(1));
    }

    #[test]
    fn full_closed_and_avoided_connections() {
        let closed = SlotLoad {
            open: false,
            in_flight: 0,
            max_streams: 10,
        };
        assert_eq!(pick(&[open(10, 10), closed], None), None);
        assert_eq!(pick(&[open(10, 10), open(9, 10)], None), Some(1));
        assert_eq!(pick(&[open(0, 10), open(9, 10)], Some(0)), Some(1));
        // The avoided one is still better than nothing.
        assert_eq!(pick(&[open(0, 10), open(10, 10)], Some(0)), Some(0));
        assert_eq!(pick(&[], None), None);
        // A limit of zero (server said stop) means no room.
        assert_eq!(pick(&[open(0, 0)], None), None);
    }
}
