//! `amqps://` against a RabbitMQ node of the test's own with a TLS listener only, certificates
//! made by the test, and client certificates required (`verify_peer`,
//! `fail_if_no_peer_cert`): a job round-trips between a worker given the TLS files as flags and
//! a client given them in the URL's query; a wrong CA, or no client certificate, stops a worker
//! or a scheduler at once with one clear error and exit code 1.

use lepus::Request;
use lepus_demo::jobs::Add;
use lepus_tests::{Node, Pki, free_address, scheduler_binary, spawn, temp_file, worker_binary};
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn jobs_round_trip_over_amqps_and_a_wrong_ca_fails_at_once_with_one_clear_error() {
    let dir = Node::prepare("tls");
    let pki = Pki::generate(&dir);
    let port = free_address().port();
    let config = format!(
        "listeners.tcp = none\nlisteners.ssl.default = {port}\n\
         ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
         ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display(),
    );
    let _node = Node::start(dir, &config);
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let queue = lepus_tests::unique_name("tls");
    let path = |p: &std::path::Path| p.display().to_string();

    // A worker with the TLS files as flags, a client with them in the URL.
    let mut worker = Command::new(worker_binary());
    worker.args(["--queue", &queue, "--amqp-url", &url, "--tls-ca-file", &path(&pki.ca)]);
    worker.args(["--tls-cert-file", &path(&pki.client_cert), "--tls-key-file", &path(&pki.client_key)]);
    worker.env("LEPUS_AMQP_URL", &url);
    let worker = spawn(worker, "tls-worker");
    let client_url = format!(
        "{url}?cacertfile={}&certfile={}&keyfile={}",
        path(&pki.ca),
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let client = connect_when_the_worker_consumes(&client_url, &queue).await;
    let sum = client.call(Request::new(Add { a: 2, b: 3 }).queue(queue.as_str()), Duration::from_secs(20)).await;
    assert_eq!(sum.expect("a result over amqps://"), 5, "worker log:\n{}", worker.log());
    client.close().await.expect("closed");

    // A CA that did not sign the broker's certificate, and no client certificate: each stops the
    // process at once, with one error.
    let client_cert = ["--tls-cert-file", &path(&pki.client_cert), "--tls-key-file", &path(&pki.client_key)];
    let wrong_ca = ["--tls-ca-file", &path(&pki.wrong_ca)];
    let no_client_cert = ["--tls-ca-file", &path(&pki.ca)];
    let schedules = temp_file("tls-schedules");
    std::fs::write(&schedules, "[[schedule]]\nname = \"s\"\ncron = \"@hourly\"\njob = \"demo.noop\"\n")
        .expect("written");
    let cases: [(&str, Vec<&str>, &str); 3] = [
        ("worker, wrong CA", [&["--queue", &queue][..], &wrong_ca, &client_cert].concat(), "invalid peer certificate"),
        ("worker, no client certificate", [&["--queue", &queue][..], &no_client_cert].concat(), "IO error"),
        (
            "scheduler, wrong CA",
            [&["run", "--schedules", &schedules][..], &wrong_ca, &client_cert].concat(),
            "invalid peer certificate",
        ),
    ];
    for (what, args, cause) in cases {
        let program = if what.starts_with("worker") { worker_binary() } else { scheduler_binary() };
        let started = Instant::now();
        let output = Command::new(program).args(&args).env("LEPUS_AMQP_URL", &url).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: took {:?}", started.elapsed());
        assert!(stderr.contains(cause), "{what}: {stderr}");
        assert!(stderr.contains("The TLS connection failed. Check that the broker's certificate"), "{what}: {stderr}");
        assert_eq!(stderr.matches(": cannot connect to RabbitMQ at amqps://guest:***@").count(), 1, "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }

    // The client gets the same error as a value.
    let wrong = lepus::Client::connect(&format!("{url}?cacertfile={}", path(&pki.wrong_ca))).await;
    let error = wrong.expect_err("a wrong CA is refused");
    assert!(error.hint().starts_with("The TLS connection failed"), "{error}");
}

/// A client on `url` once a worker consumes `queue` there (the worker declares it on start).
async fn connect_when_the_worker_consumes(url: &str, queue: &str) -> lepus::Client {
    let client = lepus::Client::connect(url).await.expect("the client connects over amqps://");
    let broker = lepus::Broker::connect(url, "lepus-tests").await.expect("connected");
    lepus_tests::wait_until("the worker consumes", Duration::from_secs(30), || async {
        lepus::internal::topology::inspect_queue(&broker, queue).await.ok().flatten().is_some_and(|q| q.consumers > 0)
    })
    .await;
    broker.close().await;
    client
}
