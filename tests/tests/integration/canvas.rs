//! Chains, links and error links from Rust (`Request::then`, `link`, `link_error`), run by Lepus
//! workers: the chain's handle awaits its last step, a link gets the result first, an error link
//! the failed job's id, and a chain stops at a failing step, whose failure its caller gets.

use lepus::protocol::{Arguments, TaskMessage};
use lepus::{Error, Request};
use lepus_demo::jobs::Add;
use lepus_tests::{Raise, TestQueue, Tick, connect, temp_file, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

fn add(then: i64) -> Request<i64> {
    Request::partial::<Add>(Arguments::positional([then]))
}

#[tokio::test]
async fn a_chain_runs_step_by_step_and_its_handle_gets_the_last_result() {
    let (queue, _worker) = lepus_tests::queue_with_worker("chain").await;
    let client = connect().await;

    let chain = Request::new(Add { a: 2, b: 2 })
        .queue(queue.name())
        .then(add(4).queue(queue.name()))
        .then(add(8).queue(queue.name()));
    let pending = client.submit(chain).await.expect("sent");
    let last = pending.id().clone();
    let result = pending.result_message(TIMEOUT).await.expect("the last step's result");
    assert_eq!((result.task_id.as_str(), &result.result), (last.as_str(), &json!(16)), "((2 + 2) + 4) + 8");

    let broken = Request::new(Add { a: 1, b: 1 })
        .queue(queue.name())
        .then(
            Request::new(Raise { message: "the middle fails".into(), ..Raise::default() })
                .queue(queue.name())
                .immutable(),
        )
        .then(add(100).queue(queue.name()));
    match client.call(broken, TIMEOUT).await {
        Err(Error::JobFailed { exception, .. }) => assert_eq!(exception.message(), "the middle fails"),
        other => panic!("the failure of the middle step, got {other:?}"),
    }
    client.close().await.expect("closed");
}

#[tokio::test]
async fn links_get_the_result_and_error_links_the_failed_jobs_id() {
    let queue = TestQueue::declare("links").await;
    let links = TestQueue::declare("links-out").await;
    let ticks = temp_file("links");
    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    queue.wait_for_consumers(1).await;
    let client = connect().await;

    // A link to a Lepus job on the same queue runs (immutable: with its own arguments only); one
    // to another queue waits there.
    let record = Request::task("py.record", Arguments::default()).queue(links.name());
    let tick = Request::new(Tick { path: ticks.clone(), sleep_ms: 0 }).queue(queue.name()).immutable();
    let on_error = || Request::task("py.on_error", Arguments::default()).queue(links.name());
    let ok = Request::new(Add { a: 20, b: 22 }).queue(queue.name()).link(record).link(tick).link_error(on_error());
    let ok = client.submit(ok).await.expect("sent");
    let ok_id = ok.id().clone();
    assert_eq!(ok.output(TIMEOUT).await.expect("the sum"), 42);
    let failing =
        Request::new(Raise { message: "no".into(), ..Raise::default() }).queue(queue.name()).link_error(on_error());
    let failing = client.submit(failing).await.expect("sent");
    let failed_id = failing.id().clone();
    assert!(matches!(failing.output(TIMEOUT).await, Err(Error::JobFailed { .. })));

    wait_until("the link and the error link arrive", TIMEOUT, || async { links.ready().await >= 2 }).await;
    wait_until("the tick link ran", TIMEOUT, || async { !Tick::ids(&ticks).is_empty() }).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // a third message would show up now
    let sent: Vec<TaskMessage> = links
        .take_all(links.name())
        .await
        .iter()
        .map(|d| TaskMessage::decode(&d.properties, &d.data).expect("a message"))
        .collect();
    let args =
        |task: &str| sent.iter().find(|m| m.task == task).map(|m| (m.arguments.args.clone(), m.parent_id.clone()));
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(args("py.record"), Some((vec![json!(42)], Some(ok_id.to_string()))));
    assert_eq!(args("py.on_error"), Some((vec![Value::String(failed_id.to_string())], Some(failed_id.to_string()))));
    assert_eq!(Tick::ids(&ticks).len(), 1, "the Lepus link ran once");
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_follow_up_for_a_missing_queue_is_kept_as_a_dead_letter_and_requeued_there_later() {
    let (queue, _worker) = lepus_tests::queue_with_worker("follow-up").await;
    let client = connect().await;
    let missing = lepus_tests::unique_name("later");

    let link = Request::task("py.record", Arguments::default()).queue(missing.as_str()).id("the-link");
    let request = Request::new(Add { a: 1, b: 2 }).queue(queue.name()).link(link);
    assert_eq!(client.call(request, TIMEOUT).await.expect("the job itself succeeds"), 3);

    let letters = client.dead_letters(queue.name()).expect("valid");
    wait_until("the follow-up is kept", TIMEOUT, || async { queue.ready_in(&queue.dead_letter_queue()).await == 1 })
        .await;
    let kept = letters.list(10).await.expect("listed");
    assert_eq!((kept[0].reason.as_str(), kept[0].task.as_deref()), ("unroutable", Some("py.record")));
    assert!(kept[0].error.as_deref().is_some_and(|e| e.contains(&missing)), "{kept:?}");

    // Once the queue exists, requeueing sends the follow-up there, not to the job's queue.
    let later = TestQueue::declare_with(lepus::WorkQueue::new(missing.as_str()).expect("valid")).await;
    assert!(letters.requeue(&"the-link".into()).await.expect("requeued"));
    wait_until("the follow-up reaches its queue", TIMEOUT, || async { later.ready().await == 1 }).await;
    let arrived = later.take_all(later.name()).await;
    let message = TaskMessage::decode(&arrived[0].properties, &arrived[0].data).expect("a message");
    assert_eq!(message.arguments.args, [json!(3)]);
    client.close().await.expect("closed");
}
