//! Runs one recovery step action in a process of its own, as a node would
//! run it: for the tests that need the process's environment (`notify`
//! reads its URL from a variable, which a test sets on the child rather
//! than on itself) and its log.
//!
//! Reads one JSON object on stdin: `action` (a plan's `Action` as the log
//! encodes it), `incident`, `target`, `plan`, `step`, `term`, `index`,
//! `intent_at_ms`; `recheck: true` re-checks instead of running. Prints one
//! JSON line on stdout, `{"outcome": "done"|"failed"|"finish"|"not_done"|
//! "cannot_tell", "text": ...}`, and logs as the node does (JSON lines on
//! stderr, `FAXI_LOG` for the level) with nothing redacted, so that a test
//! sees any secret an action lets through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Read as _;
use std::sync::Arc;

use faxi_watchdog::config::Redactor;
use faxi_watchdog::mesh::state::State;
use faxi_watchdog::recovery::Action;
use faxi_watchdog::recovery::actions::{
    ActionFuture, ActionHttpClient, AgreedStates, DockerEngine, Fence, KubeApi, Outcome, Recheck,
    StepRun, World, bind,
};
use faxi_watchdog::telemetry::{LogFormat, init};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    action: Action,
    incident: u64,
    target: String,
    plan: String,
    step: u32,
    term: u64,
    index: u64,
    #[serde(default)]
    intent_at_ms: u64,
    #[serde(default)]
    recheck: bool,
}

/// No agreed state: this process is not a node.
struct Nothing;

impl AgreedStates for Nothing {
    fn state(&self, _target: &str) -> Option<State> {
        None
    }
    fn changed(&self) -> ActionFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    init(LogFormat::Json, Redactor::default()).unwrap();
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).unwrap();
    let input: Input = serde_json::from_str(&text).unwrap();
    let world = World {
        docker: DockerEngine::default(),
        agreed: Arc::new(Nothing),
        http: ActionHttpClient::new(),
        kube: KubeApi::default(),
    };
    let step = StepRun {
        incident: input.incident,
        target: input.target,
        plan: input.plan,
        step: input.step,
        fence: Fence {
            term: input.term,
            index: input.index,
        },
        intent_at_ms: input.intent_at_ms,
    };
    let action = bind(&input.action, &world);
    let (outcome, text) = if input.recheck {
        match action.recheck(&step).await {
            Recheck::Done(t) => ("done", t),
            Recheck::NotDone => ("not_done", String::new()),
            Recheck::CannotTell => ("cannot_tell", String::new()),
        }
    } else {
        match action.run(&step).await {
            Outcome::Done(t) => ("done", t),
            Outcome::Failed(t) => ("failed", t),
            Outcome::Finish(t) => ("finish", t),
        }
    };
    println!(
        "{}",
        serde_json::json!({ "outcome": outcome, "text": text })
    );
}
