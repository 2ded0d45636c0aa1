//! `lepus dead-letters`: list, requeue or purge a work queue's dead letters.

use crate::args::DeadLetterAction;
use crate::output::{Table, out, print_json, progress};
use lepus::{Client, JobId};
use serde_json::{Value, json};

pub(crate) async fn dead_letters(
    client: &Client,
    queue: &str,
    action: DeadLetterAction,
    json: bool,
) -> Result<(), String> {
    let letters = client.dead_letters(queue).map_err(|e| e.to_string())?;
    match action {
        DeadLetterAction::List { limit } => {
            let mut table = Table::new(&["id", "job", "reason", "attempts", "error"]);
            for letter in letters.list(limit).await.map_err(|e| e.to_string())? {
                table.row(vec![
                    letter.id.as_ref().map_or(Value::Null, |id| Value::from(id.as_str())),
                    letter.task.map_or(Value::Null, Value::from),
                    Value::from(letter.reason.to_string()),
                    letter.attempts.map_or(Value::Null, Value::from),
                    letter.error.map_or(Value::Null, Value::from),
                ]);
            }
            table.print(json);
        }
        DeadLetterAction::Requeue { id: Some(id), .. } => {
            if !letters.requeue(&JobId::from(id.as_str())).await.map_err(|e| e.to_string())? {
                return Err(format!("no dead letter of {queue} has the job id {id}"));
            }
            report(json, json!({"requeued": [id], "queue": queue}), &format!("requeued {id} to {queue}"));
        }
        DeadLetterAction::Requeue { id: None, .. } => {
            let shown = !json;
            let count = letters
                .requeue_all_with(|done, total| {
                    if shown && total > 1 {
                        progress("requeued", done, total);
                    }
                })
                .await
                .map_err(|e| e.to_string())?;
            report(json, json!({"requeued": count, "queue": queue}), &format!("requeued {count} to {queue}"));
        }
        DeadLetterAction::Purge => {
            let count = letters.purge().await.map_err(|e| e.to_string())?;
            report(json, json!({"purged": count, "queue": queue}), &format!("purged {count}"));
        }
    }
    Ok(())
}

fn report(json: bool, value: Value, text: &str) {
    if json { print_json(&value) } else { out!("{text}") }
}
