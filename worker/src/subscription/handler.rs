//! [`EventHandler`]: what handles an event. Any async function of the event and up to three more
//! arguments that implement [`FromContext`] ([`crate::EventContext`], [`crate::State`], …),
//! returning `Result<(), E>` for any error `E`:
//!
//! ```text
//! async fn bill(order: OrderCreated) -> anyhow::Result<()>
//! async fn bill(order: OrderCreated, ctx: EventContext, State(db): State<Db>) -> Result<(), MyError>
//! ```
//!
//! A handler's error fails the attempt as a job's does ([`crate::JobError`] says whether to retry).

use crate::context::JobContext;
use crate::extract::FromContext;
use crate::job_error::JobError;
use crate::registry::{CallError, CallFuture, Erased};
use lepus::Event;
use lepus::protocol::Arguments;
use serde_json::Value;
use std::any::TypeId;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

/// The future of one event handler call.
pub(crate) type EventFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// An async function that handles events of type `E`; `Args` are the arguments it takes besides
/// the event. Implemented for every such function: there is nothing to implement.
pub trait EventHandler<E: Event, Args>: Send + Sync + 'static {
    /// Handles the event with arguments taken from `context`.
    #[doc(hidden)]
    fn call(&self, event: E, context: &JobContext) -> EventFuture;

    /// The state the arguments need registered on the worker.
    #[doc(hidden)]
    fn required_states() -> Vec<(TypeId, &'static str)>;
}

macro_rules! event_handler {
    ($($arg:ident $value:ident),*) => {
        impl<E, F, Fut, Err, $($arg,)*> EventHandler<E, ($($arg,)*)> for F
        where
            E: Event,
            F: Fn(E, $($arg,)*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<(), Err>> + Send + 'static,
            Err: Into<anyhow::Error>,
            $($arg: FromContext,)*
        {
            #[allow(unused_variables)]
            fn call(&self, event: E, context: &JobContext) -> EventFuture {
                $(
                    let $value = match $arg::from_context(context) {
                        Ok(value) => value,
                        Err(e) => return Box::pin(std::future::ready(Err(e))),
                    };
                )*
                let running = self(event, $($value,)*);
                Box::pin(async move { running.await.map_err(|e| JobError::from_handler(e.into())) })
            }

            #[allow(unused_mut)]
            fn required_states() -> Vec<(TypeId, &'static str)> {
                let mut states = Vec::new();
                $(states.extend($arg::required_state());)*
                states
            }
        }
    };
}

event_handler!();
event_handler!(A1 a1);
event_handler!(A1 a1, A2 a2);
event_handler!(A1 a1, A2 a2, A3 a3);

/// An event handler behind the job handlers' erased interface: the event's body comes alone in
/// `args`, the output is `null`.
pub(crate) struct TypedEvent<E, H, Args> {
    pub(crate) handler: H,
    pub(crate) event: PhantomData<fn(E, Args)>,
}

impl<E: Event, Args: 'static, H: EventHandler<E, Args>> Erased for TypedEvent<E, H, Args> {
    fn call(&self, arguments: Arguments, context: &JobContext) -> CallFuture {
        let body = arguments.args.into_iter().next().unwrap_or(Value::Null);
        let event = match serde_json::from_value::<E>(body) {
            Ok(event) => event,
            Err(e) => return Box::pin(std::future::ready(Err(CallError::BadInput(e.to_string())))),
        };
        let running = self.handler.call(event, context);
        Box::pin(async move {
            running.await.map_err(CallError::Failed)?;
            Ok(Value::Null)
        })
    }
}
