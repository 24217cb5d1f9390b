//! Bindings generated from `wit/plugin.wit`. Nothing hand-written lives here.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
    pub_export_macro: true,
    export_macro_name: "__export_switchboard_plugin",
    default_bindings_module: "switchboard_guest::bindings",
});
