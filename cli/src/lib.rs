//! `lepus`: one command for the people who operate Lepus. See `lepus --help`; [`main`] is the
//! whole program, so that others (Lepus's tests) can run it as a binary of their own.
//!
//! Every command is one-shot: what it declares on the broker (a remote-control reply queue, a
//! client's reply queue) goes when it ends. Output is a table, or JSON with `--json`. Exit codes:
//! 0 done, 1 failed (one paragraph on standard error), 2 bad arguments.

mod args;
mod dead_letters;
mod jobs;
mod output;
mod queues;
mod schedules;
mod workers;

use args::{BrokerArgs, Cli, Command};
use clap::Parser;
use lepus::{Broker, Client, ClientOptions, Connector, Tls};
use std::process::ExitCode;

/// Parses the command line and runs the command.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("lepus: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lepus: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let broker = connect(&cli.broker).await?;
    let done = dispatch(&cli, &broker).await;
    broker.close().await;
    done
}

async fn dispatch(cli: &Cli, broker: &Broker) -> Result<(), String> {
    let (json, timeout) = (cli.json, cli.timeout);
    let client = || Client::with_broker(broker.clone(), ClientOptions::default().connection_name("lepus-cli"));
    match &cli.command {
        Command::Status => workers::status(broker, timeout, json).await,
        Command::Queues { queues, management_url } => {
            queues::queues(broker, &cli.broker.amqp_url(), queues.clone(), management_url.clone(), timeout, json).await
        }
        Command::Inspect { what, worker } => workers::inspect(broker, *what, worker.clone(), timeout, json).await,
        Command::Revoke { ids, terminate } => workers::revoke(broker, ids.clone(), *terminate, timeout, json).await,
        Command::DeadLetters { queue, action } => {
            let client = client();
            let done = dead_letters::dead_letters(&client, queue, action.clone(), json).await;
            finish(client, done).await
        }
        Command::Enqueue { job } => {
            let client = client();
            let done = jobs::enqueue(&client, job, json).await;
            finish(client, done).await
        }
        Command::Call { job, wait } => {
            let client = client();
            let done = jobs::call(&client, job, *wait, json).await;
            finish(client, done).await
        }
        Command::Batch { job, items, send, callback, callback_kwargs } => {
            let client = client();
            let done = jobs::batch(&client, job, items, send, callback.clone(), callback_kwargs, json).await;
            finish(client, done).await
        }
        Command::Progress { batch, since } => {
            let client = client();
            let done = jobs::progress(&client, batch, *since, json).await;
            finish(client, done).await
        }
        Command::Schedules { group } => schedules::schedules(broker, group, json).await,
    }
}

/// Closes the client (deleting its reply queue, if it made one), keeping the first error.
async fn finish(client: Client, done: Result<(), String>) -> Result<(), String> {
    let closed = client.close().await.map_err(|e| e.to_string());
    done.and(closed)
}

async fn connect(args: &BrokerArgs) -> Result<Broker, String> {
    let mut tls = Tls::default();
    if let Some(ca) = &args.tls_ca_file {
        tls = tls.ca_file(ca);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        tls = tls.client_certificate(cert, key);
    }
    let connector = Connector::new(&args.amqp_url(), &tls, "lepus-cli").map_err(|e| e.to_string())?;
    Broker::connect_through(connector.order(args.amqp_url_order), 1).await.map_err(|e| format!("{e}\n\n{}", e.hint()))
}
