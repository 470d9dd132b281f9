//! The cache of an object cache whose connector is empty: no caching at all.

use std::sync::Arc;

use async_trait::async_trait;

use crate::cache::Cache;
use crate::error::Result;
use crate::index::{Entry, Index};

/// A cache that stores nothing: every get misses, every other operation succeeds at once.
///
/// Used when an object cache's `Connector` is empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopCache;

/// The connector name reported by [`NoopCache`].
pub const NOOP_CONNECTOR: &str = "none";

#[async_trait]
impl<I: Index, V: Entry<I>> Cache<I, V> for NoopCache {
    fn connector(&self) -> &'static str {
        NOOP_CONNECTOR
    }

    /// None: the no-op cache stores nothing under any index, and accepts every index.
    fn indices(&self) -> &[I] {
        &[]
    }

    fn get_ready(&self, _: I, _: &str) -> Option<Result<Option<Arc<V>>>> {
        Some(Ok(None))
    }

    async fn get(&self, _: I, _: &str) -> Result<Option<Arc<V>>> {
        Ok(None)
    }

    async fn set(&self, _: Arc<V>) -> Result<()> {
        Ok(())
    }

    async fn invalidate(&self, _: I, _: &[&str]) -> Result<()> {
        Ok(())
    }

    async fn delete(&self, _: I, _: &[&str]) -> Result<()> {
        Ok(())
    }

    async fn truncate(&self) -> Result<()> {
        Ok(())
    }
}
