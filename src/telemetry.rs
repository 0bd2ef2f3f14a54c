//! OpenTelemetry: exporting spans over OTLP/HTTP when the standard `OTEL_*`
//! variables ask for it (off by default), and placing taskd's spans in the
//! right W3C trace: a request in its caller's trace (`traceparent`, or the
//! trace its `X-Trace-Id` names), a subtask run in its task's trace.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C trace-context request header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The exporter of this process, when the environment turned it on; flushed
/// and stopped by [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter. Blocks for at
    /// most the exporter's timeout.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("taskd: cannot flush the OpenTelemetry spans: {e}");
            }
        }
    }
}

/// Whether the environment asks for span export: `OTEL_TRACES_EXPORTER=otlp`,
/// or an OTLP endpoint set while `OTEL_TRACES_EXPORTER` does not say `none`;
/// never with `OTEL_SDK_DISABLED=true`. Another exporter name is an error.
pub fn export_wanted(var: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        Some("otlp") => Ok(true),
        Some("none") => Ok(false),
        Some("") | None => Ok([
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| var(v).is_some_and(|s| !s.trim().is_empty()))),
        Some(other) => Err(format!(
            "OTEL_TRACES_EXPORTER={other:?} is not supported: use otlp or none"
        )),
    }
}

/// The OpenTelemetry layer and its exporter, when the environment asks for
/// export (see [`export_wanted`]); `(None, Telemetry::default())` otherwise.
/// Endpoint, headers, timeout, sampler, batch delay and resource come from
/// the standard variables, read by the OpenTelemetry SDK itself; the
/// service name is `taskd` unless `OTEL_SERVICE_NAME` says otherwise.
pub fn layer<S>() -> Result<
    (
        Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>,
        Telemetry,
    ),
    String,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let var = |name: &str| std::env::var(name).ok();
    if !export_wanted(var)? {
        return Ok((None, Telemetry::default()));
    }
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        if let Some(p) = var(name).filter(|p| p.trim() != "http/protobuf") {
            return Err(format!(
                "{name}={p:?} is not supported: taskd exports over http/protobuf"
            ));
        }
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("cannot set up the OTLP span exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = var("OTEL_SERVICE_NAME").is_some()
        || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("taskd");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(ChosenTraceIds::default())
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("taskd");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_location(false);
    Ok((
        Some(layer),
        Telemetry {
            provider: Some(provider),
        },
    ))
}

thread_local! {
    /// The trace id the next root span built on this thread takes.
    static NEXT_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except for a root span started by [`start_in_trace`]: it
/// takes the trace id chosen for it.
#[derive(Debug, Default)]
struct ChosenTraceIds(RandomIdGenerator);

impl IdGenerator for ChosenTraceIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE.take().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Starts `span`, which must have no parent, as a root span of the trace
/// that taskd's trace id `trace` maps to ([`otel_trace_id`]). A no-op when
/// spans are not exported.
pub fn start_in_trace(span: &tracing::Span, trace: &str) {
    NEXT_TRACE.set(Some(otel_trace_id(trace)));
    // Builds the OpenTelemetry span now, on this thread, so that it is the
    // one to take the chosen id.
    let _ = span.context();
    NEXT_TRACE.set(None);
}

/// Makes `span` (not yet entered) a child of the caller's span in `parent`.
pub fn start_under(span: &tracing::Span, parent: SpanContext) {
    let cx = opentelemetry::Context::new().with_remote_span_context(parent);
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "cannot set the caller's span as parent");
    }
}

/// The W3C trace id of a taskd trace id: the id itself when it is 32 hex
/// digits, zero-padded on the left when it is fewer hex digits (OCP's 16),
/// otherwise the first 16 bytes of its SHA-256, so that any trace id a
/// caller chose still names one trace.
pub fn otel_trace_id(trace: &str) -> TraceId {
    let hex =
        !trace.is_empty() && trace.len() <= 32 && trace.bytes().all(|b| b.is_ascii_hexdigit());
    if hex {
        if let Ok(n) = u128::from_str_radix(trace, 16) {
            if n != 0 {
                return TraceId::from(n);
            }
        }
    }
    let digest = Sha256::digest(trace.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    TraceId::from_bytes(bytes)
}

/// The caller's span from a `traceparent` header (version 00 format:
/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`); `None` for
/// anything else, which is then ignored as the standard says.
pub fn parse_traceparent(header: &str) -> Option<SpanContext> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !lower_hex(version, 2) || version == "ff" || !lower_hex(flags, 2) {
        return None;
    }
    // Version 00 has exactly four fields; later versions may add more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(span, 16) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_map_to_w3c_ids() {
        let full = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(otel_trace_id(full).to_string(), full);
        assert_eq!(
            otel_trace_id("1f3af8df30ae4733").to_string(),
            "00000000000000001f3af8df30ae4733"
        );
        let chosen = otel_trace_id("deploy-42");
        assert_eq!(chosen, otel_trace_id("deploy-42"), "stable");
        assert_ne!(chosen, otel_trace_id("deploy-43"));
        assert_ne!(chosen, TraceId::INVALID);
        assert_ne!(otel_trace_id(&"0".repeat(32)), TraceId::INVALID);
    }

    #[test]
    fn traceparent_is_parsed_as_the_standard_says() {
        let cx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled() && cx.is_remote());
        let unsampled =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.expect("valid").is_sampled());
        // A later version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn export_is_off_unless_the_environment_asks() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(export_wanted(env(&[])), Ok(false));
        assert_eq!(
            export_wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])),
            Ok(true)
        );
        assert_eq!(
            export_wanted(env(&[("OTEL_TRACES_EXPORTER", "otlp")])),
            Ok(true)
        );
        assert_eq!(
            export_wanted(env(&[
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
            ])),
            Ok(false)
        );
        assert_eq!(
            export_wanted(env(&[
                ("OTEL_SDK_DISABLED", "true"),
                ("OTEL_TRACES_EXPORTER", "otlp")
            ])),
            Ok(false)
        );
        let err = export_wanted(env(&[("OTEL_TRACES_EXPORTER", "zipkin")])).unwrap_err();
        assert!(err.contains("OTEL_TRACES_EXPORTER=\"zipkin\""), "{err}");
    }
}
