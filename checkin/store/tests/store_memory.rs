//! The store conformance suite against [`MemoryStore`].

use std::sync::Arc;

use magicpush_store::{MemoryStore, Store};

magicpush_testkit::store_conformance!((Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()));
