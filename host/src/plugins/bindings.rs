//! Generated bindings for the plugin world, kept apart from hand-written code.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "plugin",
    // Presence may ask Redis: those imports await (the call's deadline still applies).
    imports: { "switchboard:plugin/presence": async },
    exports: { default: async },
});
