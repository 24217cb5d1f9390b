//! The glue between a [`Listener`] and the generated `Guest` trait, used by
//! [`export_listener!`](crate::export_listener). Not public API.

use std::marker::PhantomData;

use crate::bindings::exports::switchboard::plugin::listener::Guest;
use crate::bindings::switchboard::plugin::types as wit;
use crate::{Content, Context, Listener};

/// Implements the generated `Guest` trait for any [`Listener`] `T`.
#[derive(Debug)]
pub struct Adapter<T>(PhantomData<fn() -> T>);

impl<T: Listener> Guest for Adapter<T> {
    fn describe() -> wit::PluginInfo {
        wit::PluginInfo {
            name: T::NAME.to_owned(),
            version: T::VERSION.to_owned(),
            message_types: T::MESSAGE_TYPES.iter().map(|&t| t.to_owned()).collect(),
            lifecycle_events: T::LIFECYCLE_EVENTS,
        }
    }

    fn on_message(
        from: wit::SessionInfo,
        msg_type: String,
        content: String,
    ) -> Result<(), wit::Error> {
        let ctx = Context::new(from.into());
        T::on_message(&ctx, &msg_type, Content::new(content)).map_err(Into::into)
    }

    fn on_connect(session: wit::SessionInfo) {
        T::on_connect(&Context::new(session.into()));
    }

    fn on_disconnect(session: wit::SessionInfo) {
        T::on_disconnect(&Context::new(session.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Result};

    struct Probe;

    impl Listener for Probe {
        const NAME: &'static str = "probe";
        const VERSION: &'static str = "1.2.3";
        const MESSAGE_TYPES: &'static [&'static str] = &["a", "b"];

        fn on_message(ctx: &Context, msg_type: &str, content: Content) -> Result<()> {
            let n: u32 = content.parse()?;
            if n == 0 {
                return Err(Error::other(format!(
                    "{msg_type} from {}",
                    ctx.from().session_id
                )));
            }
            Ok(())
        }
    }

    fn session() -> wit::SessionInfo {
        wit::SessionInfo {
            session_id: "s1".into(),
            user: wit::UserRef {
                user_type: 1,
                user_id: "u".into(),
            },
            tenant_id: None,
        }
    }

    #[test]
    fn describe_reports_the_consts() {
        let info = <Adapter<Probe> as Guest>::describe();
        assert_eq!(info.name, "probe");
        assert_eq!(info.version, "1.2.3");
        assert_eq!(info.message_types, ["a", "b"]);
        assert!(!info.lifecycle_events);
    }

    #[test]
    fn on_message_maps_results() {
        assert!(<Adapter<Probe> as Guest>::on_message(session(), "a".into(), "1".into()).is_ok());
        match <Adapter<Probe> as Guest>::on_message(session(), "a".into(), "{}".into()) {
            Err(wit::Error::InvalidContent(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        match <Adapter<Probe> as Guest>::on_message(session(), "b".into(), "0".into()) {
            Err(wit::Error::Other(m)) => assert_eq!(m, "b from s1"),
            other => panic!("unexpected {other:?}"),
        }
        // The default lifecycle handlers do nothing (and call no host import).
        <Adapter<Probe> as Guest>::on_connect(session());
        <Adapter<Probe> as Guest>::on_disconnect(session());
    }
}
