//! Topic matching as RabbitMQ's topic exchange does it, for the replay (which reads every event
//! of the stream and keeps those the service's patterns would have routed to it).
//!
//! A name and a pattern are words separated by `.` (an empty name has no word, as RabbitMQ splits
//! it; `a..b` has an empty middle word). In a pattern, `*` is exactly one word and `#` is zero or more words;
//! any other word matches itself only (a word such as `a*` is literal).

/// Whether topic pattern `pattern` matches routing key (event name) `name`.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let (pattern, words) = (words_of(pattern), words_of(name));
    // reach[j]: the first i pattern words can match the first j words.
    let mut reach = vec![false; words.len() + 1];
    reach[0] = true;
    for part in pattern {
        let mut next = vec![false; words.len() + 1];
        for j in 0..=words.len() {
            if part == "#" {
                // Zero words, or one more word after a prefix `#` already reached.
                next[j] = reach[j] || (j > 0 && next[j - 1]);
            } else if j > 0 && reach[j - 1] && (part == "*" || part == words[j - 1]) {
                next[j] = true;
            }
        }
        reach = next;
    }
    reach[words.len()]
}

/// The words of a name or pattern: none for an empty one.
fn words_of(text: &str) -> Vec<&str> {
    if text.is_empty() { Vec::new() } else { text.split('.').collect() }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn words_stars_and_hashes_match_as_in_rabbitmq() {
        let cases = [
            ("orders.created", "orders.created", true),
            ("orders.created", "orders.paid", false),
            ("orders.*", "orders.created", true),
            ("orders.*", "orders", false),
            ("orders.*", "orders.created.eu", false),
            ("*.created", "orders.created", true),
            ("*", "orders", true),
            ("*", "", false),
            ("*", "a.b", false),
            ("#", "", true),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("#.created", "created", true),
            ("#.created", "orders.created", true),
            ("#.created", "eu.orders.created", true),
            ("#.created", "orders.created.late", false),
            ("orders.#", "orders", true),
            ("orders.#", "orders.a.b", true),
            ("orders.#", "order", false),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
            ("a.*.#", "a", false),
            ("a.*.#", "a.b", true),
            ("a.*.#", "a.b.c.d", true),
            ("#.#", "a.b", true),
            ("#.*", "", false),
            ("#.*.*", "a", false),
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
            ("orders*", "orders.created", false),
            ("orders*", "orders*", true),
            ("test.*.happened", "test.replay.happened", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(matches(pattern, name), expected, "{pattern:?} against {name:?}");
        }
    }
}
