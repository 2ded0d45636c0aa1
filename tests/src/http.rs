//! HTTP as the tests see a worker's or scheduler's endpoint, and Prometheus's API: a free port
//! to give a process, plain GETs, and the samples of a `/metrics` page.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};

/// An address on the loopback interface with a port that was free a moment ago.
#[must_use]
pub fn free_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// GETs `url`: the status and the body, or `None` if nothing answers.
#[must_use]
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .new_agent();
    let mut response = agent.get(url).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// The samples of a page in Prometheus's text format, by series (`name{labels}` as written).
#[derive(Debug, Clone, Default)]
pub struct Samples(BTreeMap<String, f64>);

impl Samples {
    /// Parses an exposition.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self(samples)
    }

    /// GETs and parses `http://{address}/metrics`; empty if nothing answers.
    #[must_use]
    pub fn scrape(address: SocketAddr) -> Self {
        http_get(&format!("http://{address}/metrics")).map(|(_, body)| Self::parse(&body)).unwrap_or_default()
    }

    /// The value of `series`, e.g. `lepus_jobs_total{queue="q",job="demo.add",outcome="succeeded"}`.
    #[must_use]
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.get(series).copied()
    }

    /// The names of the metrics, without labels.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.0.keys().map(|series| series.split('{').next().unwrap_or(series).to_owned()).collect();
        names.dedup();
        names
    }
}
