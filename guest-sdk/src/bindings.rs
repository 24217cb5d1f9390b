//! Bindings generated from `wit/0.2.0` (`switchboard:plugin@0.2.0`). Nothing hand-written
//! lives here.

wit_bindgen::generate!({
    path: "wit/0.2.0",
    world: "plugin",
    // The standard key-value interfaces are part of the contract: generate them here.
    generate_all,
    pub_export_macro: true,
    export_macro_name: "__export_switchboard_plugin",
    default_bindings_module: "switchboard_guest::bindings",
});
