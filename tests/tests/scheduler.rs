//! The scheduler in-process against a real HTTP server: its LocalView (what
//! the status API will serve) follows rise/fall with the last latency,
//! detail and error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::http::AppStub;
use faxi_tests::{target, wait_for};
use faxi_watchdog::probe::ProbeContext;
use faxi_watchdog::scheduler::Scheduler;
use faxi_watchdog::verdict::Verdict;

#[tokio::test]
async fn the_local_view_follows_the_target() {
    let app = AppStub::start().await;
    let spec = target(&format!(
        "name = \"app\"\nkind = \"http\"\nurl = \"{}\"\ninterval = \"50ms\"\nfall = 2\nrise = 2\n",
        app.url()
    ));
    let sched = Scheduler::start(&[spec], &ProbeContext::new(1)).unwrap();
    let view = sched.view();
    let started = view.get("app").unwrap().since;
    assert_eq!(view.get("app").unwrap().verdict, Verdict::Unknown);

    let up = wait_for("app UP in the view", Duration::from_secs(20), || async {
        let v = view.get("app").unwrap();
        if v.verdict == Verdict::Up {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    assert_eq!(up.detail, "HTTP 200");
    assert_eq!(up.error, None);
    assert!(up.latency.is_some() && up.probes >= 2);
    // `since` is when the verdict changed: two probes (rise = 2, 50 ms
    // apart) after the view was made.
    assert!(up.since > started, "{up:?} vs {started:?}");

    app.set_status(503);
    let down = wait_for("app DOWN in the view", Duration::from_secs(20), || async {
        let v = view.get("app").unwrap();
        if v.verdict == Verdict::Down {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    assert_eq!(down.error.as_deref(), Some("HTTP 503, expected 200"));
    assert!(down.since > up.since, "{down:?} vs {up:?}");
    assert_eq!(view.snapshot().len(), 1);
    assert!(view.get("nope").is_none());
    sched.shutdown().await;
}
