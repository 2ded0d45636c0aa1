//! The job mix: which demo jobs to send with which inputs, and what each one must answer.
//!
//! About 80% `demo.add`, 14% `demo.echo`, 5% short `demo.sleep` and 1% `demo.fail`, in random
//! order, with inputs drawn from a small pseudo-random generator seeded by the clock.

use lepus::protocol::{ResultMessage, Status};
use lepus_demo::jobs::{Add, Echo, Fail, Sleep};
use serde_json::{Map, Value, json};

/// One job to send.
#[derive(Debug, Clone)]
pub(crate) enum Planned {
    Add(Add),
    Echo(Echo),
    Sleep(Sleep),
    Fail(Fail),
}

impl Planned {
    /// The job's name on the wire.
    pub(crate) fn name(&self) -> &'static str {
        use lepus::Job;
        match self {
            Planned::Add(_) => Add::NAME,
            Planned::Echo(_) => Echo::NAME,
            Planned::Sleep(_) => Sleep::NAME,
            Planned::Fail(_) => Fail::NAME,
        }
    }

    /// Checks a result against what the job must answer; the error says what differed.
    pub(crate) fn check(&self, result: &ResultMessage) -> Result<(), String> {
        match self {
            Planned::Fail(job) => {
                let message = result.exception().map(|e| e.message());
                if result.status == Status::Failure && message.as_deref() == Some(job.message.as_str()) {
                    Ok(())
                } else {
                    Err(format!(
                        "demo.fail should fail with {:?}, got {:?} {}",
                        job.message, result.status, result.result
                    ))
                }
            }
            _ if result.status != Status::Success => {
                let message = result.exception().map_or_else(|| result.result.to_string(), |e| e.message());
                Err(format!("{} failed: {message}", self.describe()))
            }
            Planned::Add(job) => expect(self, &result.result, &json!(job.a.checked_add(job.b))),
            Planned::Echo(job) => expect(self, &result.result, &Value::Object(job.0.clone())),
            Planned::Sleep(job) => expect(self, &result.result, &json!(job.seconds)),
        }
    }

    /// The call, shortened, for error reports.
    fn describe(&self) -> String {
        match self {
            Planned::Add(job) => format!("demo.add({}, {})", job.a, job.b),
            Planned::Echo(job) => format!("demo.echo({})", Value::Object(job.0.clone())),
            Planned::Sleep(job) => format!("demo.sleep({})", job.seconds),
            Planned::Fail(job) => format!("demo.fail({:?})", job.message),
        }
    }
}

fn expect(job: &Planned, got: &Value, wanted: &Value) -> Result<(), String> {
    if got == wanted { Ok(()) } else { Err(format!("{} returned {got}, expected {wanted}", job.describe())) }
}

/// `count` jobs in a realistic mix.
pub(crate) fn mix(count: u32) -> Vec<Planned> {
    let mut random = SplitMix::from_clock();
    (0..count)
        .map(|n| match random.below(100) {
            0 => Planned::Fail(Fail { message: format!("demo failure #{n}: this one is meant to fail") }),
            1..=5 => Planned::Sleep(Sleep { seconds: f64::from(10 + random.below(41)) / 1000.0 }),
            6..=19 => Planned::Echo(Echo(echo_input(n, &mut random))),
            _ => Planned::Add(Add { a: random.signed(1_000_000_000), b: random.signed(1_000_000_000) }),
        })
        .collect()
}

fn echo_input(n: u32, random: &mut SplitMix) -> Map<String, Value> {
    let word = ["alpha", "beta", "gamma", "delta", "epsilon"][random.below(5) as usize];
    let input = json!({
        "n": n,
        "word": word,
        "flags": [random.below(2) == 1, random.below(2) == 1],
        "nested": {"id": random.signed(1_000_000), "note": format!("échantillon {n} ✓")},
    });
    match input {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// SplitMix64: a tiny, good-enough generator for demo inputs (not for anything secret).
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn from_clock() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().rotate_left(30) ^ u64::from(d.subsec_nanos()));
        Self(nanos ^ u64::from(std::process::id()).rotate_left(32))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u32) -> u32 {
        u32::try_from(self.next() % u64::from(bound)).unwrap_or_default()
    }

    /// A number in `-bound..=bound`.
    fn signed(&mut self, bound: u32) -> i64 {
        let span = 2 * u64::from(bound) + 1;
        i64::try_from(self.next() % span).unwrap_or_default() - i64::from(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus::JobId;
    use lepus::protocol::ExceptionInfo;

    #[test]
    fn the_mix_is_mostly_additions_with_a_few_failures() {
        let jobs = mix(10_000);
        let count = |name: &str| jobs.iter().filter(|j| j.name() == name).count();
        assert!(count("demo.add") > 7_000, "{}", count("demo.add"));
        assert!((20..300).contains(&count("demo.fail")), "{}", count("demo.fail"));
        assert!(count("demo.echo") > 0 && count("demo.sleep") > 0);
    }

    #[test]
    fn results_are_checked() {
        let id = JobId::from("x");
        let add = Planned::Add(Add { a: 2, b: 3 });
        assert!(add.check(&ResultMessage::success(&id, json!(5))).is_ok());
        assert!(add.check(&ResultMessage::success(&id, json!(6))).is_err());
        let fail = Planned::Fail(Fail { message: "boom".into() });
        assert!(fail.check(&ResultMessage::failure(&id, &ExceptionInfo::new("JobError", "boom"), None)).is_ok());
        assert!(fail.check(&ResultMessage::success(&id, Value::Null)).is_err());
    }
}
