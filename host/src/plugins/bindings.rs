//! Generated bindings for every contract version the host serves, kept apart from
//! hand-written code. `v0_2` is the current contract, re-exported at this module's root;
//! `v0_1` components are adapted to it (`compat`).

/// `switchboard:plugin@0.1.0`, frozen.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit/0.1.0",
        world: "plugin",
        // Presence may ask Redis: those imports await (the call's deadline still applies).
        imports: { "switchboard:plugin/presence": async },
        exports: { default: async },
    });
}

/// `switchboard:plugin@0.2.0`: 0.1.0 plus key-value state (`wasi:keyvalue` and
/// `switchboard:plugin/state`).
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit/0.2.0",
        world: "plugin",
        // Presence and state may ask Redis: those imports await (the call's deadline still
        // applies).
        imports: {
            "switchboard:plugin/presence": async,
            "switchboard:plugin/state": async,
            "wasi:keyvalue/store": async,
            "wasi:keyvalue/atomics": async,
            "wasi:keyvalue/batch": async,
        },
        exports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": crate::plugins::kv::handle::Bucket,
            "wasi:keyvalue/atomics.cas": crate::plugins::kv::handle::Cas,
        },
    });
}

pub(crate) use v0_2::*;
