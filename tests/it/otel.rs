//! Span export over OTLP/HTTP: a real `taskd serve` configured only by the
//! standard `OTEL_*` variables sends its spans to a small OTLP receiver
//! started here, which decodes them with the OTLP protobuf types. Request
//! spans are in their caller's trace, under the caller's span; subtask run
//! spans are in their task's trace with the run's ids as attributes.

use crate::support::engine::{new_task, submit_with};
use crate::support::served::{Served, ADMIN};
use crate::support::{wait_for, TestDb};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use taskd::dag::NodeSpec;

/// What the receiver got: each span with its resource's `service.name`.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().expect("receiver lock").clone()
    }
}

async fn export(State(r): State<Received>, body: Bytes) -> StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = r.0.lock().expect("receiver lock");
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|res| res.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
    // An empty ExportTraceServiceResponse is zero bytes.
    StatusCode::OK
}

fn text(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on a free loopback port: its base URL and what it
/// receives.
async fn otlp_receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_in_the_callers_and_the_tasks_traces() {
    let db = TestDb::new().await;
    let (endpoint, received) = otlp_receiver().await;
    let served = Served::start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "taskd-otel-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;

    // A task whose only step fails once and is retried: two runs.
    let task_trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    let mut flaky = NodeSpec::new("flaky", "test.fail?times=1", 30);
    flaky.retry_limit = 1;
    let task = taskd::store::task::NewTask {
        trace_id: task_trace.into(),
        ..new_task("traced")
    };
    let id = submit_with(&db, task, vec![flaky]).await.0;

    // Read it in the caller's trace, under the caller's span.
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let client = reqwest::Client::new();
    let url = served.url(&format!("/api/v2/tasks/instances/{id}"));
    let body: serde_json::Value = wait_for("the task to succeed", Duration::from_secs(60), || {
        let req = client
            .get(&url)
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"));
        async move {
            let v: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
            (v["data"]["status"] == "SUCCESSFUL").then_some(v)
        }
    })
    .await;
    assert_eq!(body["traceId"], caller_trace, "{body:#}");
    assert_eq!(body["data"]["traceId"], task_trace, "{body:#}");

    // An OCP-style X-Trace-Id names a trace too: zero-padded to 128 bits.
    let r = client
        .get(served.url("/api/v2/tasks/instances"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("X-Trace-Id", "1f3af8df30ae4733")
        .send()
        .await
        .expect("list tasks");
    assert_eq!(r.status(), 200);

    let subtask_id = body["data"]["subtasks"][0]["id"].to_string();
    let spans = wait_for("the spans to arrive", Duration::from_secs(30), || {
        let spans = received.spans();
        async move {
            let runs = spans
                .iter()
                .filter(|(_, s)| s.name == "subtask" && hex(&s.trace_id) == task_trace)
                .count();
            let listed = spans
                .iter()
                .any(|(_, s)| hex(&s.trace_id) == "00000000000000001f3af8df30ae4733");
            (runs == 2 && listed).then_some(spans)
        }
    })
    .await;

    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "taskd-otel-test"),
        "OTEL_SERVICE_NAME names the service"
    );
    let reads: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "request" && hex(&s.trace_id) == caller_trace)
        .collect();
    assert!(!reads.is_empty(), "request spans in the caller's trace");
    for s in &reads {
        assert_eq!(
            hex(&s.parent_span_id),
            caller_span,
            "under the caller's span"
        );
        assert_eq!(
            attr(s, "http.route").as_deref(),
            Some("/api/v2/tasks/instances/{taskInstanceId}")
        );
        assert_eq!(attr(s, "user").as_deref(), Some(ADMIN.0));
        assert_eq!(attr(s, "trace_id").as_deref(), Some(caller_trace));
    }
    assert!(reads
        .iter()
        .any(|s| attr(s, "http.response.status_code").as_deref() == Some("200")));

    let mut runs: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "subtask" && hex(&s.trace_id) == task_trace)
        .collect();
    runs.sort_by_key(|s| attr(s, "run_time"));
    let run_times: Vec<Option<String>> = runs.iter().map(|s| attr(s, "run_time")).collect();
    assert_eq!(run_times, [Some("1".into()), Some("2".into())]);
    for s in &runs {
        assert!(
            s.parent_span_id.is_empty(),
            "a run is a root of its task's trace"
        );
        assert_eq!(attr(s, "task_id"), Some(id.to_string()));
        assert_eq!(attr(s, "subtask_id"), Some(subtask_id.clone()));
        assert_eq!(attr(s, "class_name").as_deref(), Some("test.fail?times=1"));
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }

    served.stop().await;
}
