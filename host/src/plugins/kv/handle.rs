//! What a plugin's key-value handles hold, in its call's resource table. A leaf module: the
//! generated bindings name these types.

/// An open `wasi:keyvalue` bucket: its name. The tenant comes from the call using it, so a
/// handle kept across calls by a reused instance cannot reach the tenant it was opened for.
#[derive(Debug)]
pub struct Bucket {
    /// The bucket's name, checked when it was opened.
    pub(crate) name: String,
}

/// A compare-and-swap in progress: the value seen when it began.
#[derive(Debug)]
pub struct Cas {
    /// The bucket's name.
    pub(crate) bucket: String,
    /// The key it swaps.
    pub(crate) key: String,
    /// What the key held when the swap began (`None`: absent).
    pub(crate) seen: Option<Vec<u8>>,
}
