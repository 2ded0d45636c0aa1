//! Connecting to the broker, and the one paragraph shown when it cannot be reached.

use crate::console::errln;
use lepus::{Client, Error};

/// Connects the demo's client, or explains on standard error why it could not.
pub(crate) async fn client(url: &str) -> Option<Client> {
    match Client::connect(url).await {
        Ok(client) => Some(client),
        Err(Error::Connect { url, reason, .. }) => {
            let reason = reason.trim_end_matches('.');
            if REFUSALS.iter().any(|refusal| reason.contains(refusal)) {
                errln!("{}", refused_paragraph(&url, reason));
            } else {
                errln!("{}", unreachable_paragraph(&url, reason));
            }
            None
        }
        Err(e) => {
            errln!("lepus-demo: {e}. Set LEPUS_AMQP_URL to amqp://user:password@host:5672/vhost.");
            None
        }
    }
}

/// What the broker says when it answers but will not let the client in (bad credentials, no such
/// virtual host).
const REFUSALS: [&str; 2] = ["ACCESS_REFUSED", "NOT_ALLOWED"];

/// What to do when the broker at `url` (already redacted by the client) turns the client away.
fn refused_paragraph(url: &str, reason: &str) -> String {
    format!(
        "lepus-demo: RabbitMQ at {url} answered but refused the connection ({reason}). Check the user, \
         password and virtual host in LEPUS_AMQP_URL (amqp://user:password@host:5672/vhost, where the \
         default virtual host `/` is written %2f); `rabbitmqctl list_users` and `rabbitmqctl list_vhosts` \
         show what the broker knows."
    )
}

/// What to do when nothing answers at `url` (already redacted by the client).
fn unreachable_paragraph(url: &str, reason: &str) -> String {
    format!(
        "lepus-demo: RabbitMQ is not reachable at {url} ({reason}). The demo needs a running broker. {}",
        lepus::internal::UNREACHABLE_HINT
    )
}

#[cfg(test)]
mod tests {
    use super::{refused_paragraph, unreachable_paragraph};

    #[test]
    fn the_paragraph_says_what_to_do() {
        let text = unreachable_paragraph(&lepus::internal::redact("amqp://guest:secret@127.0.0.1:5999/%2f"), "refused");
        assert!(!text.contains("secret"), "{text}");
        for hint in ["127.0.0.1:5999", "rabbitmq-server -detached", "apt-get install rabbitmq-server", "LEPUS_AMQP_URL"]
        {
            assert!(text.contains(hint), "{hint} missing from {text}");
        }
    }

    #[test]
    fn a_refused_login_is_not_called_unreachable() {
        let text = refused_paragraph("amqp://guest:***@host/%2f", "ACCESS_REFUSED - Login was refused");
        assert!(text.contains("refused the connection") && !text.contains("not reachable"), "{text}");
    }
}
