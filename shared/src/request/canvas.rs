//! What follows a request, in Celery's canvas terms: [`Request::then`] (a chain),
//! [`Request::link`] and [`Request::link_error`]; and how they travel in the message body, as
//! Celery signatures (see `lepus::protocol::Embed`), so that a Lepus or a Celery worker runs
//! them.

use super::{Request, Start};
use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::job::Job;
use crate::protocol::task::iso8601;
use crate::protocol::{Arguments, Signature};
use crate::topology::tier_name;
use serde_json::json;

impl<O> Request<O> {
    /// Job `J` with only some of its arguments: the rest come when it runs as a follow-up (the
    /// previous step's output, put first). For [`Request::then`], [`Request::link`] and
    /// [`Request::link_error`]: `Request::partial::<Add>(Arguments::positional([4]))` is Celery's
    /// `add.s(4)`.
    #[must_use]
    pub fn partial<J: Job<Output = O>>(arguments: Arguments) -> Self {
        Request {
            task: J::NAME.into(),
            arguments: Ok(arguments),
            queue: J::QUEUE.into(),
            priority: J::priority(),
            ..Request::blank()
        }
    }

    /// Runs `next` once this job (and the steps already chained after it) has succeeded, with
    /// the output as its first positional argument (Celery's `chain`). The request's result, the
    /// one `submit` and `call` await, becomes the last step's; should a step fail, the steps after
    /// it do not run and get its failure as their result.
    ///
    /// ```no_run
    /// # use lepus::{Client, Job, Request, protocol::Arguments};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Add { a: i64, b: i64 }
    /// # impl Job for Add { const NAME: &'static str = "demo.add"; type Output = i64; }
    /// # async fn demo(client: Client) -> lepus::Result<()> {
    /// let chain = Request::new(Add { a: 2, b: 2 })
    ///     .then(Request::partial::<Add>(Arguments::positional([4])))
    ///     .then(Request::partial::<Add>(Arguments::positional([8])));
    /// let sixteen: i64 = client.submit(chain).await?.await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn then<P>(mut self, mut next: Request<P>) -> Request<P> {
        let later = std::mem::take(&mut next.steps);
        next.id.get_or_insert_with(JobId::random);
        self.steps.push(next.erase());
        self.steps.extend(later);
        self.retyped()
    }

    /// Sends `callback` after this job succeeds, with its output as the first positional
    /// argument (Celery's `link`).
    #[must_use]
    pub fn link<P>(mut self, callback: Request<P>) -> Self {
        self.callbacks.push(callback.erase());
        self
    }

    /// Sends `errback` if this job fails for good, with its id as the first positional argument
    /// (Celery's `link_error`).
    #[must_use]
    pub fn link_error<P>(mut self, errback: Request<P>) -> Self {
        self.errbacks.push(errback.erase());
        self
    }

    /// As a follow-up ([`Request::then`], [`Request::link`], [`Request::link_error`]), runs with
    /// its own arguments only: no result or id is put first (Celery's immutable signature,
    /// `.si()`).
    #[must_use]
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// The id of the job whose result this request's handle awaits: the last chained step's, else
    /// the job's own (if chosen).
    pub(crate) fn awaited_id(&self) -> Option<JobId> {
        self.steps.last().map_or_else(|| self.id.clone(), |last| last.id.clone())
    }
}

impl Request {
    /// This request as a Celery signature, to travel in another message's body.
    pub(super) fn signature(self) -> Result<Signature> {
        self.refuse_unique()?;
        let queue = tier_name(self.queue, self.priority)?;
        let arguments = self.arguments.map_err(Error::serde("encode", format!("the input of job {}", self.task)))?;
        let mut signature = Signature::new(self.task.into_owned(), arguments);
        signature.immutable = self.immutable;
        let options = &mut signature.options;
        options.insert("queue".into(), json!(queue));
        if let Some(id) = self.id {
            options.insert("task_id".into(), json!(id));
        }
        match self.start {
            Some(Start::In(delay)) => drop(options.insert("countdown".into(), json!(delay.as_secs_f64()))),
            Some(Start::At(at)) => drop(options.insert("eta".into(), json!(iso8601(at)))),
            None => {}
        }
        match self.expires {
            Some(Start::In(expires)) => drop(options.insert("expires".into(), json!(expires.as_secs_f64()))),
            Some(Start::At(at)) => drop(options.insert("expires".into(), json!(iso8601(at)))),
            None => {}
        }
        if let Some(limit) = self.time_limit {
            options.insert("time_limit".into(), json!(limit.as_secs_f64()));
        }
        if let Some(policy) = self.retry {
            options.insert(crate::protocol::task::RETRY_HEADER.into(), json!(policy));
        }
        for (key, linked) in [("link", self.callbacks), ("link_error", self.errbacks)] {
            if !linked.is_empty() {
                let signatures = linked.into_iter().map(Request::signature).collect::<Result<Vec<_>>>()?;
                options.insert(key.into(), json!(signatures));
            }
        }
        Ok(signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use std::time::Duration;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }

    impl Job for Add {
        const NAME: &'static str = "demo.add";
        type Output = i64;
    }

    #[test]
    fn a_chain_travels_as_celery_does_it_and_its_handle_awaits_the_last_step() {
        let last = Request::partial::<Add>(Arguments::positional([8])).id("the-last").delay(Duration::from_secs(5));
        let request = Request::new(Add { a: 2, b: 2 })
            .then(
                Request::partial::<Add>(Arguments::positional([4])).link(Request::task("py.log", Arguments::default())),
            )
            .then(last);
        assert_eq!(request.awaited_id(), Some(JobId::from("the-last")));
        let (_, message) = request.into_message(Utc::now()).expect("valid");
        let chain = message.canvas().chain;
        assert_eq!(chain.len(), 2);
        assert_eq!(
            (chain[0].options["task_id"].as_str(), chain[0].args.as_slice()),
            (Some("the-last"), &[json!(8)][..])
        );
        assert_eq!(chain[0].options["countdown"], json!(5.0));
        assert_eq!(chain[1].args, [json!(4)], "the next step is last, as in Celery");
        assert_eq!(chain[1].options["link"][0]["task"], "py.log");
    }

    #[test]
    fn links_and_immutable_follow_ups() {
        let request = Request::new(Add { a: 1, b: 2 })
            .link(Request::task("py.record", Arguments::default()).queue("links"))
            .link_error(Request::task("py.cleanup", Arguments::positional(["x"])).immutable());
        let embed = request.into_message(Utc::now()).expect("valid").1.canvas();
        assert_eq!(
            (embed.callbacks[0].task.as_str(), embed.callbacks[0].options["queue"].as_str()),
            ("py.record", Some("links"))
        );
        assert!(embed.errbacks[0].immutable && embed.chain.is_empty());
        let low = Request::new(Add { a: 1, b: 2 })
            .link(Request::task("py.record", Arguments::default()).queue("links").priority(crate::Priority::Low));
        let (queue, message) = low.priority(crate::Priority::High).into_message(Utc::now()).expect("valid");
        assert_eq!(queue, "lepus.high", "the request's tier of its job type's queue");
        assert_eq!(message.embed.to_string().matches("\"links.low\"").count(), 1, "a follow-up keeps its tier");
        let bad = Request::new(Add { a: 1, b: 2 }).link(Request::task("x", Arguments::default()).queue("amq.no"));
        assert!(bad.into_message(Utc::now()).is_err(), "a follow-up's queue name is checked too");
    }
}
