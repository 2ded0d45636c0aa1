//! Connecting to the broker, and the one paragraph shown when it cannot be reached or turns the
//! demo away.

use crate::console::errln;
use lepus::{Client, Error, ReplyCode};

/// Connects the demo's client, or explains on standard error why it could not.
pub(crate) async fn client(url: &str) -> Option<Client> {
    let error = match Client::connect(url).await {
        Ok(client) => return Some(client),
        Err(error) => error,
    };
    let refused = matches!(error.reply_code(), Some(ReplyCode::AccessRefused | ReplyCode::NotAllowed));
    match error {
        Error::Connect { url, reason, .. } => errln!("{}", paragraph(&url, reason.trim_end_matches('.'), refused)),
        e => errln!("lepus-demo: {e}. Set LEPUS_AMQP_URL to amqp://user:password@host:5672/vhost."),
    }
    None
}

/// What to do when the broker at `url` (already redacted) turned the login away (`refused`: bad
/// credentials, no such virtual host) or did not answer.
fn paragraph(url: &str, reason: &str, refused: bool) -> String {
    if refused {
        format!(
            "lepus-demo: RabbitMQ at {url} answered but refused the connection ({reason}). Check the user, \
             password and virtual host in LEPUS_AMQP_URL (amqp://user:password@host:5672/vhost, where the \
             default virtual host `/` is written %2f); `rabbitmqctl list_users` and `rabbitmqctl list_vhosts` \
             show what the broker knows."
        )
    } else {
        let hint = lepus::internal::UNREACHABLE_HINT;
        format!("lepus-demo: RabbitMQ is not reachable at {url} ({reason}). The demo needs a running broker. {hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::paragraph;

    #[test]
    fn the_paragraph_says_what_to_do() {
        let url = lepus::internal::redact("amqp://guest:secret@127.0.0.1:5999/%2f");
        let text = paragraph(&url, "refused", false);
        assert!(!text.contains("secret"), "{text}");
        for hint in ["127.0.0.1:5999", "rabbitmq-server -detached", "apt-get install rabbitmq-server", "LEPUS_AMQP_URL"]
        {
            assert!(text.contains(hint), "{hint} missing from {text}");
        }
        let text = paragraph("amqp://guest:***@host/%2f", "ACCESS_REFUSED - Login was refused", true);
        assert!(text.contains("refused the connection") && !text.contains("not reachable"), "{text}");
    }
}
