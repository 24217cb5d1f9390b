//! Claims `alloc` with content `{"mb": n}`: allocates and touches n MiB, then
//! replies `alloc-ok` `{"mb": n}` to the sender. Past the host's memory cap the
//! allocation fails, which aborts, which traps the call. `n` must be below 2048
//! (a wasm32 allocation is at most 2 GiB); a larger `n` is invalid content.

use std::hint::black_box;

use serde::{Deserialize, Serialize};
use switchboard_guest::{Content, Context, Error, Listener, Result};

/// One MiB.
const MIB: usize = 1 << 20;

/// The content of `alloc`.
#[derive(Deserialize)]
struct Alloc {
    /// How many MiB to allocate.
    mb: usize,
}

/// The content of `alloc-ok`.
#[derive(Serialize)]
struct AllocOk {
    /// How many MiB were allocated and touched.
    mb: usize,
}

/// A listener that uses as much memory as it is told to.
struct FaultMemory;

impl Listener for FaultMemory {
    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const MESSAGE_TYPES: &'static [&'static str] = &["alloc"];

    fn on_message(ctx: &Context, _msg_type: &str, content: Content) -> Result<()> {
        let Alloc { mb } = content.parse()?;
        // A wasm32 allocation is at most `isize::MAX` bytes: just under 2 GiB.
        let len = mb
            .checked_mul(MIB)
            .filter(|&len| isize::try_from(len).is_ok())
            .ok_or_else(|| Error::invalid_content("mb must be below 2048"))?;
        // Non-zero bytes, so every page is written and none can stay unmapped.
        let buf = black_box(vec![0xA5u8; len]);
        black_box(&buf);
        ctx.reply("alloc-ok", &AllocOk { mb })
    }
}

switchboard_guest::export_listener!(FaultMemory);
