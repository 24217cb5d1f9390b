//! A valid component that is not a Switchboard plugin: it exports a `greeter`
//! interface instead of `switchboard:plugin/listener`. The host must refuse it.

wit_bindgen::generate!({
    inline: r#"
        package test:wrong-world;

        interface greeter {
            greet: func(name: string) -> string;
        }

        world wrong {
            export greeter;
        }
    "#,
    world: "wrong",
});

/// The greeter.
struct Greeter;

impl exports::test::wrong_world::greeter::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
