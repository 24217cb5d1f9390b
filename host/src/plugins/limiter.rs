//! The resource limiter of a plugin call's store: one memory cap for the whole instance, the
//! sum of all its linear memories, so a component with several memories cannot reach several
//! times the cap.

use wasmtime::ResourceLimiter;

/// A memory grow refused because the instance would pass its cap.
#[derive(Debug, thiserror::Error)]
#[error("growing memory past the limit of {cap} bytes (all memories together)")]
pub(crate) struct MemoryCapExceeded {
    /// The cap in bytes.
    pub cap: usize,
}

/// Core instances, tables and memories one plugin instance may create. Generous for the
/// interpreters embedded by JS and Python components; they bound the bookkeeping, not memory.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 8;

/// Tracks the bytes of every linear memory of one store against one cap.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    cap: usize,
    /// Bytes of linear memory the store holds now, across all its memories.
    used: usize,
}

impl MemoryBudget {
    /// A budget of `cap` bytes for all memories together.
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap, used: 0 }
    }

    /// Bytes in use across all memories.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        match self.used.checked_add(growth) {
            Some(total) if total <= self.cap => {
                self.used = total;
                Ok(true)
            }
            // A trap, not a failed `memory.grow`: guests abort on allocation failure anyway,
            // and the fault report then names the limit.
            _ => Err(wasmtime::Error::new(MemoryCapExceeded { cap: self.cap })),
        }
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_for_all_memories_together() {
        let mib = 1 << 20;
        let mut budget = MemoryBudget::new(32 * mib);
        // Two memories of 12 MiB each fit; a third does not, though each alone is under the cap.
        assert!(budget.memory_growing(0, 12 * mib, None).unwrap());
        assert!(budget.memory_growing(0, 12 * mib, None).unwrap());
        let err = budget.memory_growing(0, 12 * mib, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryCapExceeded>().is_some());
        assert_eq!(budget.used(), 24 * mib);
        // Growing one memory counts only the growth.
        assert!(budget.memory_growing(12 * mib, 20 * mib, None).unwrap());
        assert_eq!(budget.used(), 32 * mib);
        assert!(budget.memory_growing(20 * mib, 20 * mib + 1, None).is_err());
        // Huge requests never wrap around.
        assert!(budget.memory_growing(0, usize::MAX, None).is_err());
    }
}
