//! One poll against the fake fleet over real HTTP: every reason code of SPEC §1 and
//! every value dialect the fleet serves, each turned into exactly one outcome.

use ingest::poller::{build_client, poll, PollLimits, PollOutcome};
use integration_tests::fleet::{Behaviour, DownMode, Fleet, FleetClock, Scenario, Step};
use proto_events::FailureReason;
use std::time::Duration;

fn limits() -> PollLimits {
    PollLimits {
        connect_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_millis(700),
        body_limit_bytes: 64 * 1024,
    }
}

fn failed(outcome: &PollOutcome) -> Option<FailureReason> {
    match outcome {
        PollOutcome::Failed(r, _) => Some(*r),
        PollOutcome::Sampled(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reason_code_is_reported() -> anyhow::Result<()> {
    let no_metric = Step::Sample(serde_json::from_str(r#"{"hostname": "x", "uptime": 5}"#)?);
    let fleet = Fleet::start_local(
        Scenario::new()
            .machine(
                "ok",
                Behaviour::Steady {
                    cpu: 10.0,
                    mem: 20.0,
                    disk: 30.0,
                },
            )
            .machine("e500", Behaviour::HttpError { status: 500 })
            .machine("e404", Behaviour::HttpError { status: 404 })
            .machine(
                "garbage",
                Behaviour::Garbage {
                    body: "not json{".into(),
                },
            )
            .machine(
                "no-metric",
                Behaviour::Sequence {
                    steps: vec![no_metric],
                },
            )
            .machine("huge", Behaviour::Huge { bytes: 200_000 })
            .machine(
                "hang",
                Behaviour::Down {
                    mode: DownMode::Hang,
                    after_s: 0.0,
                    until_s: None,
                },
            )
            .machine(
                "dropped",
                Behaviour::Sequence {
                    steps: vec![Step::Drop],
                },
            )
            .machine_on_port(
                "refused",
                0,
                Behaviour::Down {
                    mode: DownMode::Refused,
                    after_s: 0.0,
                    until_s: None,
                },
            ),
        FleetClock::manual(100.0),
    )
    .await?;
    assert!(
        fleet
            .wait_listening("refused", false, Duration::from_secs(5))
            .await,
        "the refused machine's port stayed open"
    );
    let client = build_client(&limits())?;
    let l = limits();
    let outcome = |name: &'static str| {
        let (client, url, l) = (client.clone(), fleet.url_of(name), l);
        async move { poll(&client, &url, &l).await }
    };

    assert_eq!(failed(&outcome("ok").await), None);
    let e500 = outcome("e500").await;
    assert_eq!(failed(&e500), Some(FailureReason::HttpStatus));
    assert!(
        matches!(&e500, PollOutcome::Failed(_, d) if d.contains("500")),
        "{e500:?}"
    );
    assert_eq!(
        failed(&outcome("e404").await),
        Some(FailureReason::HttpStatus)
    );
    let garbage = outcome("garbage").await;
    assert_eq!(failed(&garbage), Some(FailureReason::InvalidJson));
    assert!(
        matches!(&garbage, PollOutcome::Failed(_, d) if d == "not json{"),
        "the body is the detail: {garbage:?}"
    );
    let no_metric = outcome("no-metric").await;
    assert_eq!(failed(&no_metric), Some(FailureReason::InvalidPayload));
    assert!(
        matches!(&no_metric, PollOutcome::Failed(_, d) if d.contains("hostname")),
        "{no_metric:?}"
    );
    assert_eq!(
        failed(&outcome("huge").await),
        Some(FailureReason::BodyTooLarge)
    );
    assert_eq!(failed(&outcome("hang").await), Some(FailureReason::Timeout));
    assert_eq!(
        failed(&outcome("dropped").await),
        Some(FailureReason::Connect)
    );
    assert_eq!(
        failed(&outcome("refused").await),
        Some(FailureReason::Connect)
    );
    // Nothing listens at all.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let nothing = poll(&client, &format!("http://{closed}/status"), &l).await;
    assert_eq!(failed(&nothing), Some(FailureReason::Connect));
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_dialect_is_understood() -> anyhow::Result<()> {
    let fleet = Fleet::start_local(
        Scenario::new().machine("d", Behaviour::Dialects),
        FleetClock::manual(3600.0),
    )
    .await?;
    let client = build_client(&limits())?;
    let url = fleet.url_of("d");
    type Want = Option<(Option<f64>, Option<f64>, Option<f64>, Option<u64>)>;
    let expected: [(u64, Want); 18] = [
        (0, Some((Some(30.0), Some(40.5), Some(50.0), Some(3600)))),
        (1, Some((Some(30.0), Some(30.5), Some(30.0), Some(3600)))),
        (2, Some((Some(31.0), Some(41.0), Some(51.0), Some(95_826)))),
        (3, Some((Some(32.0), Some(42.0), Some(52.0), Some(7_200)))),
        (4, Some((Some(33.0), Some(43.0), Some(53.0), Some(303)))),
        (5, Some((Some(34.0), Some(44.0), Some(54.0), Some(3_723)))),
        (
            6,
            Some((
                Some(35.0),
                Some(45.0),
                Some(55.0),
                Some(3 * 86_400 + 14_706),
            )),
        ),
        (7, Some((Some(36.0), Some(46.0), Some(56.0), Some(86_401)))),
        (8, Some((Some(37.0), Some(47.0), Some(57.0), Some(95_826)))),
        (9, Some((Some(38.0), Some(48.0), Some(58.0), None))),
        (10, Some((None, Some(40.0), None, Some(3600)))),
        (11, Some((Some(50.0), None, None, Some(3600)))),
        (12, Some((None, None, Some(60.0), Some(3600)))),
        (13, None), // nothing usable: invalid_payload
        (14, Some((Some(20.0), Some(30.0), Some(40.0), Some(3600)))),
        (15, Some((Some(25.0), None, None, None))),
        (16, Some((Some(60.5), Some(60.5), Some(99.9), Some(3600)))),
        (17, Some((Some(0.0), Some(100.0), Some(0.0), Some(0)))),
    ];
    for (i, want) in expected {
        let got = poll(&client, &url, &limits()).await;
        match (want, &got) {
            (Some((cpu, mem, disk, up)), PollOutcome::Sampled(s)) => {
                assert_eq!(
                    (s.cpu, s.mem, s.disk, s.uptime_s),
                    (cpu, mem, disk, up),
                    "dialect {i}"
                );
                let unknown = [cpu, mem, disk].iter().filter(|v| v.is_none()).count()
                    + usize::from(up.is_none());
                assert_eq!(
                    s.issues.len(),
                    unknown,
                    "dialect {i}: every unknown value has a recorded reason: {:?}",
                    s.issues
                );
            }
            (None, PollOutcome::Failed(FailureReason::InvalidPayload, _)) => {}
            (want, got) => panic!("dialect {i}: wanted {want:?}, got {got:?}"),
        }
    }
    fleet.shutdown().await;
    Ok(())
}
