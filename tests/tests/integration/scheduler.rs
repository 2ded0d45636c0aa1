//! The scheduler against the real broker: several replicas fire each tick exactly once, a killed
//! leader is replaced without duplicates, missed ticks follow the misfire policy, bad schedule
//! files are refused naming the entry.

use chrono::{DateTime, Utc};
use lepus::Broker;
use lepus::internal::topology::{schedule_state_queue, scheduler_leader_queue};
use lepus::protocol::Arguments;
use lepus_scheduler::{Misfire, Schedule, Scheduler, SchedulerConfig};
use lepus_tests::{Cleanup, Process, TestQueue, Tick, scheduler_binary, temp_file, unique_name, wait_until};
use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A schedule file with one `*/2 * * * * *` schedule per (name, misfire, file) writing test.tick
/// lines, all to `queue`.
fn schedule_file(queue: &str, schedules: &[(&str, &str, &str)]) -> String {
    let path = temp_file("schedules");
    let mut text = String::new();
    for (name, misfire, ticks) in schedules {
        text.push_str(&format!(
            "[[schedule]]\nname = \"{name}\"\ncron = \"*/2 * * * * *\"\njob = \"test.tick\"\nqueue = \"{queue}\"\nmisfire = \"{misfire}\"\nkwargs = {{ path = \"{ticks}\" }}\n\n"
        ));
    }
    std::fs::write(&path, text).expect("schedule file written");
    path
}

/// A scheduler replica of group `group` (each test has its own, so tests do not share a lead).
fn replica(schedules: &str, group: &str) -> Process {
    let mut command = Command::new(scheduler_binary());
    command.args(["run", "--schedules", schedules, "--group", group, "--heartbeat", "2s"]);
    lepus_tests::spawn(command, "scheduler")
}

/// The tick time in a firing id `<schedule>@<time>`.
fn tick_of(id: &str) -> DateTime<Utc> {
    let (_, time) = id.rsplit_once('@').expect("a firing id");
    DateTime::parse_from_rfc3339(time).expect("an RFC 3339 time").with_timezone(&Utc)
}

/// Asserts that `ids` are distinct and every two seconds from the first to the last.
fn assert_each_tick_once(ids: &[String]) {
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a tick ran twice: {ids:?}");
    let ticks: BTreeSet<DateTime<Utc>> = ids.iter().map(|id| tick_of(id)).collect();
    let (first, last) = (ticks.first().copied().expect("ticks"), ticks.last().copied().expect("ticks"));
    let expected = (last - first).num_seconds() / 2 + 1;
    assert_eq!(ticks.len() as i64, expected, "a tick is missing between {first} and {last}: {ids:?}");
    assert!(ticks.iter().all(|t| t.timestamp() % 2 == 0), "{ids:?}");
}

/// Deletes, at the end of a test, the queues a scheduler group leaves behind: its schedules'
/// states and its leader announcements.
fn group_cleanup(group: &str, schedules: &[&str]) -> Cleanup {
    let mut cleanup = Cleanup::default();
    cleanup.queue(scheduler_leader_queue(group));
    for name in schedules {
        cleanup.queue(schedule_state_queue(group, name));
    }
    cleanup
}

/// Which replica leads `group`, as the broker tells (see `lepus_scheduler::leader`).
async fn leader(broker: &Broker, group: &str, replicas: &[Process]) -> Option<usize> {
    let leader = lepus_scheduler::leader(broker, group).await.expect("the broker answers")?;
    replicas.iter().position(|replica| lepus_tests::node_name(replica) == leader.node)
}

/// Three replicas of a group of their own firing a `*/2 * * * * *` schedule (misfire `all`: a tick
/// due during a hand-over still runs, once) at a worker that writes the firing ids down.
struct Pulse {
    queue: TestQueue,
    _worker: Process,
    ticks: String,
    group: String,
    _cleanup: Cleanup,
    replicas: Vec<Process>,
}

impl Pulse {
    async fn start(what: &str) -> Self {
        let queue = TestQueue::declare(what).await;
        let _worker = lepus_tests::start_worker(queue.name(), &[]);
        queue.wait_for_consumers(1).await;
        let ticks = temp_file("ticks");
        let file = schedule_file(queue.name(), &[("pulse", "all", &ticks)]);
        let group = unique_name("group");
        let _cleanup = group_cleanup(&group, &["pulse"]);
        let replicas = (0..3).map(|_| replica(&file, &group)).collect();
        Self { queue, _worker, ticks, group, _cleanup, replicas }
    }

    async fn leader(&self) -> Option<usize> {
        leader(self.queue.broker(), &self.group, &self.replicas).await
    }

    /// Stops every replica still running (SIGTERM), lets the worker finish the last firing, and
    /// returns whether each stopped cleanly.
    async fn stop(&mut self) -> Vec<bool> {
        let mut clean = Vec::new();
        for replica in &mut self.replicas {
            let killed = replica.exit_status().is_some();
            replica.terminate().expect("SIGTERM sent");
            clean.push(killed || replica.wait_exit(TIMEOUT).await.is_some_and(|s| s.success()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        clean
    }
}

#[tokio::test]
async fn with_three_replicas_every_even_second_runs_exactly_once() {
    let mut pulse = Pulse::start("cron").await;
    wait_until("a replica leads", TIMEOUT, || async { pulse.leader().await.is_some() }).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(pulse.leader().await.is_some(), "one of the three replicas still leads");
    assert_eq!(pulse.stop().await, [true; 3], "every replica exits 0 on SIGTERM");

    let ids = Tick::ids(&pulse.ticks);
    assert!(ids.len() >= 4, "too few ticks in 11 s: {ids:?}");
    assert_each_tick_once(&ids);
    assert!(ids.iter().all(|id| id.starts_with("pulse@")), "{ids:?}");
    let after = lepus_scheduler::leader(pulse.queue.broker(), &pulse.group).await.expect("the broker answers");
    assert_eq!(after, None, "nobody leads after all stopped");
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_heartbeat_window_without_duplicates() {
    let mut pulse = Pulse::start("takeover").await;
    wait_until("three ticks", TIMEOUT, || async { Tick::ids(&pulse.ticks).len() >= 3 }).await;
    let first = pulse.leader().await.expect("one of the replicas leads");
    pulse.replicas[first].kill();
    let killed = std::time::Instant::now();
    wait_until("another replica leads", TIMEOUT, || async { pulse.leader().await.is_some_and(|now| now != first) })
        .await;
    let handover = killed.elapsed();
    assert!(handover < Duration::from_secs(4), "took {handover:?}, more than two heartbeats");

    let before = Tick::ids(&pulse.ticks).len();
    wait_until("three more ticks", TIMEOUT, || async { Tick::ids(&pulse.ticks).len() >= before + 3 }).await;
    pulse.stop().await;
    // Misfire `all`: a tick due during the hand-over runs late, but it runs, once.
    assert_each_tick_once(&Tick::ids(&pulse.ticks));
}

#[tokio::test]
async fn ticks_missed_while_no_scheduler_ran_follow_the_misfire_policy() {
    let (queue, _worker) = lepus_tests::queue_with_worker("misfire").await;
    let files: HashMap<&str, String> = ["skip", "once", "all"].into_iter().map(|p| (p, temp_file(p))).collect();
    let schedules: Vec<(&str, &str, &str)> =
        ["skip", "once", "all"].iter().map(|p| (*p, *p, files[p].as_str())).collect();
    let file = schedule_file(queue.name(), &schedules);

    let group = unique_name("group");
    let _cleanup = group_cleanup(&group, &["skip", "once", "all"]);
    let mut first = replica(&file, &group);
    wait_until("each schedule fired", TIMEOUT, || async { files.values().all(|f| !Tick::ids(f).is_empty()) }).await;
    first.terminate().expect("SIGTERM sent");
    assert!(first.wait_exit(TIMEOUT).await.is_some_and(|s| s.success()), "{}", first.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last: HashMap<&str, DateTime<Utc>> =
        files.iter().map(|(p, f)| (*p, Tick::ids(f).iter().map(|id| tick_of(id)).max().expect("a tick"))).collect();
    let latest = last.values().max().copied().expect("ticks");

    // Five ticks pass with no scheduler; restart between the fifth and the sixth.
    let restart = latest + chrono::TimeDelta::milliseconds(11_000);
    tokio::time::sleep((restart - Utc::now()).to_std().unwrap_or_default()).await;
    let mut second = replica(&file, &group);
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.terminate().expect("SIGTERM sent");
    assert!(second.wait_exit(TIMEOUT).await.is_some_and(|s| s.success()), "{}", second.log());
    tokio::time::sleep(Duration::from_secs(1)).await;

    for (policy, expected) in [("skip", 0), ("once", 1), ("all", 5)] {
        let ids = Tick::ids(&files[policy]);
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{policy}: a tick ran twice: {ids:?}");
        let gap_end = last[policy] + chrono::TimeDelta::seconds(10);
        let caught_up = ids.iter().map(|id| tick_of(id)).filter(|t| *t > last[policy] && *t <= gap_end).count();
        assert_eq!(caught_up, expected, "{policy}: ran {caught_up} of the missed ticks: {ids:?}");
        assert!(
            second.log().contains(&format!("policy {policy}")),
            "{policy}: the decision is logged:\n{}",
            second.log()
        );
    }
    // Regular ticks resume after the restart.
    assert!(Tick::ids(&files["skip"]).iter().any(|id| tick_of(id) > restart), "skip resumed");
}

#[tokio::test]
async fn invalid_schedule_files_are_rejected_with_the_bad_entry_named() {
    let path = temp_file("bad-schedules");
    std::fs::write(&path, "[[schedule]]\nname = \"good\"\ncron = \"@hourly\"\njob = \"demo.noop\"\n\n[[schedule]]\nname = \"broken\"\ncron = \"0 0 31 2 * * *\"\njob = \"demo.noop\"\n\n[[schedule]]\nname = \"zoned\"\ncron = \"@daily\"\ntimezone = \"Europe/Atlantis\"\njob = \"demo.noop\"\n").expect("written");
    // `check` fails its check (1); `run` refuses its settings (2).
    for (command, code) in [("check", 1), ("run", 2)] {
        let output = Command::new(scheduler_binary()).args([command, "--schedules", &path]).output().expect("runs");
        assert_eq!(output.status.code(), Some(code), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(r#"schedule #2 ("broken"): invalid cron expression"#), "{command}: {stderr}");
        assert!(
            stderr.contains(r#"schedule #3 ("zoned"): unknown time zone "Europe/Atlantis""#),
            "{command}: {stderr}"
        );
        assert!(!stderr.contains("\"good\""), "the good entry is not blamed: {stderr}");
    }
}

#[tokio::test]
async fn a_firing_whose_queue_is_missing_is_held_counted_and_fired_once_the_queue_exists() {
    let name = unique_name("late-queue");
    let ticks = temp_file("ticks");
    let kwargs = serde_json::json!({ "path": ticks }).as_object().cloned().unwrap_or_default();
    let schedule = Schedule::new("late", "* * * * * *", "test.tick")
        .and_then(|s| s.queue(&name))
        .expect("valid")
        .arguments(Arguments { args: vec![], kwargs })
        .misfire(Misfire::Skip);
    let group = unique_name("group");
    let _cleanup = group_cleanup(&group, &["late"]);
    let config = SchedulerConfig::default().amqp_url(lepus_tests::amqp_url()).group(group.as_str());
    let scheduler = Scheduler::new(config, vec![schedule]);
    let stats = scheduler.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(scheduler.run(async { drop(stopped.await) }));

    // No queue of that name: the tick is held back, tried again, and not recorded as fired.
    wait_until("the firing was held back twice", TIMEOUT, || async { stats.held() >= 2 }).await;
    assert_eq!(stats.fired(), 0);
    let broker = lepus::Broker::connect(&lepus_tests::amqp_url(), "lepus-tests").await.expect("connected");
    let channel = broker.channel().await.expect("channel");
    let last = lepus_scheduler::last_fired(&channel, &group, "late").await.expect("read");
    assert_eq!(last, None, "a held firing leaves the schedule's last fire time alone");

    // The queue appears: the held tick fires (late, with its own id), then the schedule goes on.
    let appeared = Utc::now();
    let queue = TestQueue::declare_with(lepus::WorkQueue::new(name.as_str()).expect("valid")).await;
    let _worker = lepus_tests::start_worker(queue.name(), &[]);
    wait_until("the held tick and a regular one ran", TIMEOUT, || async { Tick::ids(&ticks).len() >= 2 }).await;
    let ids = Tick::ids(&ticks);
    assert!(tick_of(&ids[0]) < appeared, "the first job is the tick held back before the queue existed: {ids:?}");
    assert!(ids[1..].iter().all(|id| tick_of(id) > appeared - chrono::TimeDelta::seconds(1)), "then skip: {ids:?}");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "each tick once: {ids:?}");
    assert!(stats.fired() >= 2);
    stop.send(()).expect("the scheduler runs");
    running.await.expect("joined").expect("the scheduler stopped cleanly");
}
