//! Dead letters you can act on: list them with their reasons, requeue one or all (and they then
//! run), purge them; from the library (the `lepus` command line: `lepus_cli`).

use lepus::protocol::{Arguments, TaskMessage};
use lepus::{JobId, Request};
use lepus_tests::{Flaky, connect, temp_file, wait_until};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn dead_letters_can_be_listed_requeued_to_success_and_purged() {
    let (queue, _worker) = lepus_tests::queue_with_worker("dlq-api").await;
    let client = connect().await;
    let letters = client.dead_letters(queue.name()).expect("a valid queue");
    let dlq = queue.dead_letter_queue();

    // Two jobs whose first run fails for good, and one message naming an unknown job.
    let mut ids = Vec::new();
    let mut records = Vec::new();
    for _ in 0..2 {
        let record = temp_file("revive");
        let job = Flaky { fail_times: 1, record: record.clone(), permanent: true, ..Flaky::default() };
        ids.push(client.enqueue(Request::new(job).queue(queue.name())).await.expect("enqueued"));
        records.push(record);
    }
    queue.publish(&TaskMessage::new("no.such.job", Arguments::default())).await;
    wait_until("three dead letters", TIMEOUT, || async { queue.ready_in(&dlq).await == 3 }).await;

    let listed = letters.list(10).await.expect("listed");
    assert_eq!(listed.len(), 3);
    let failed: Vec<&JobId> = listed.iter().filter(|l| l.reason == "failed").filter_map(|l| l.id.as_ref()).collect();
    assert_eq!(failed.len(), 2, "{listed:?}");
    assert!(ids.iter().all(|id| failed.contains(&id)), "{listed:?}");
    assert!(listed.iter().any(|l| l.reason == "unknown-job" && l.task.as_deref() == Some("no.such.job")));
    let flaky = listed.iter().find(|l| l.reason == "failed").expect("a failed job");
    assert_eq!((flaky.attempts, flaky.error.as_deref()), (Some(1), Some("run 1 failed on purpose")));
    assert_eq!(queue.ready_in(&dlq).await, 3, "listing leaves them in place");

    // Requeue one by id: it runs again, with its attempts reset, and now succeeds.
    assert!(letters.requeue(&ids[0]).await.expect("requeued"));
    wait_until("the requeued job ran again", TIMEOUT, || async { Flaky::runs(&records[0]).len() == 2 }).await;
    assert_eq!(Flaky::runs(&records[0]).iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 1]);
    assert!(!letters.requeue(&JobId::from("no-such-id")).await.expect("searched"));
    wait_until("two dead letters left", TIMEOUT, || async { queue.ready_in(&dlq).await == 2 }).await;

    // Requeue all: the other flaky job succeeds, the unknown job comes straight back.
    assert_eq!(letters.requeue_all().await.expect("requeued"), 2);
    wait_until("the second job ran again", TIMEOUT, || async { Flaky::runs(&records[1]).len() == 2 }).await;
    wait_until("only the unknown job is dead again", TIMEOUT, || async { queue.ready_in(&dlq).await == 1 }).await;

    assert_eq!(letters.purge().await.expect("purged"), 1);
    assert!(letters.list(10).await.expect("listed").is_empty());
    client.close().await.expect("closed");
}
