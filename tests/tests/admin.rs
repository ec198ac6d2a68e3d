//! The operator's view: metrics on a real scrape, the breaker API, the live event
//! stream, and admin authentication.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use gateway_tests::{
    Gateway, Options, Scripted, echo, one_upstream, plugin_entry, sample, start_origin,
};

/// Runs promtool with `args` (and `input` on stdin) and requires success.
fn promtool(args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool is needed (make setup installs it): {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write promtool input");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool_accepts(scrape: &str) {
    promtool(&["check", "metrics"], scrape);
}

const TOKEN: &str = "test-admin-token-0123456789";

/// A gateway in front of `origin` whose admin API needs the bearer token `TOKEN`.
async fn gateway_with_token(origin: &gateway_tests::Origin) -> Gateway {
    Gateway::start_with(
        &one_upstream(&[origin.addr()], ""),
        Options {
            env: &[("GATEWAY_TEST_ADMIN_TOKEN", TOKEN)],
            admin_keys: Some("token_env: GATEWAY_TEST_ADMIN_TOKEN"),
            ..Options::default()
        },
    )
    .await
}

#[tokio::test]
async fn metrics_follow_a_breaker_open_and_closed_again() {
    let (status, handler) = Scripted::new(500);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(
        &[origin.addr()],
        "    breaker:\n      consecutive_failures: 2\n      open_duration: 300ms\n      half_open: { permitted_requests: 1, success_threshold: 1 }\n",
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(gw.get("/").await.status, 500);
    }
    assert_eq!(gw.get("/").await.status, 503);
    let open = gw.scrape().await;
    let value = |series: &str| sample(&open, series);
    assert_eq!(
        value("gateway_breaker_state{state=\"open\",upstream=\"api\"}"),
        Some(1.0),
        "{open}"
    );
    assert_eq!(
        value("gateway_breaker_state{state=\"closed\",upstream=\"api\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(
            "gateway_breaker_transitions_total{from=\"closed\",reason=\"consecutive_failures\",to=\"open\",upstream=\"api\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value("gateway_upstream_requests_total{outcome=\"failure\",upstream=\"api\"}"),
        Some(2.0)
    );
    assert_eq!(
        value("gateway_breaker_rejections_total{upstream=\"api\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("gateway_fallbacks_total{kind=\"default\",reason=\"circuit_open\",upstream=\"api\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("gateway_upstream_request_duration_seconds_count{upstream=\"api\"}"),
        Some(2.0)
    );
    assert!(
        open.contains("gateway_config_info{hash=\""),
        "config hash exported"
    );
    promtool_accepts(&open);

    status.set_status(200);
    gw.wait_open_period_over("api").await;
    assert_eq!(gw.get("/").await.status, 200);
    let closed = gw.scrape().await;
    let value = |series: &str| sample(&closed, series);
    assert_eq!(
        value("gateway_breaker_state{state=\"closed\",upstream=\"api\"}"),
        Some(1.0),
        "{closed}"
    );
    assert_eq!(
        value(
            "gateway_breaker_transitions_total{from=\"open\",reason=\"open_period_elapsed\",to=\"half_open\",upstream=\"api\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "gateway_breaker_transitions_total{from=\"half_open\",reason=\"probes_succeeded\",to=\"closed\",upstream=\"api\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value("gateway_upstream_requests_total{outcome=\"success\",upstream=\"api\"}"),
        Some(1.0)
    );
    promtool_accepts(&closed);
}

#[tokio::test]
async fn the_event_stream_delivers_a_transition_as_it_happens() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    let mut events = gateway_tests::EventStream::open(&gw).await;
    assert!(
        events.received.starts_with("HTTP/1.1 200"),
        "{}",
        events.received
    );
    assert!(events.received.contains("text/event-stream"));

    let forced = gw
        .admin(
            "PUT",
            "/api/v1/breakers/api/state",
            &[],
            br#"{"state":"forced_open"}"#,
        )
        .await;
    assert_eq!(forced.status, 200);
    events.read_until("\"reason\":\"operator\"").await;
    let data = events
        .received
        .lines()
        .find(|l| l.starts_with("data: ") && l.contains("breaker_transition"))
        .expect("a data line");
    let event: serde_json::Value =
        serde_json::from_str(&data["data: ".len()..]).expect("JSON event");
    assert_eq!(event["upstream"], "api");
    assert_eq!(event["from"], "closed");
    assert_eq!(event["to"], "forced_open");
    assert!(event["window"]["calls"].is_number());
}

#[tokio::test]
async fn forced_states_and_reset_change_what_traffic_gets() {
    let (status, handler) = Scripted::new(200);
    let origin = start_origin(handler).await;
    let gw = Gateway::start(&one_upstream(
        &[origin.addr()],
        "    breaker: { consecutive_failures: 1, open_duration: 60s }\n",
    ))
    .await;
    let set = |state: &'static str| {
        let gw = &gw;
        async move {
            let body = format!("{{\"state\":\"{state}\"}}");
            let response = gw
                .admin("PUT", "/api/v1/breakers/api/state", &[], body.as_bytes())
                .await;
            assert_eq!(response.status, 200, "{}", response.text());
            response.json()
        }
    };

    let forced = set("forced_open").await;
    assert_eq!(
        (forced["state"].as_str(), forced["mode"].as_str()),
        (Some("forced_open"), Some("forced_open"))
    );
    let rejected = gw.get("/").await;
    assert_eq!(rejected.status, 503);
    assert_eq!(rejected.json()["state"], "forced_open");
    assert_eq!(origin.stats().requests(), 0);

    // Disabled: failures pass through and never trip.
    set("disabled").await;
    status.set_status(500);
    for _ in 0..3 {
        assert_eq!(gw.get("/").await.status, 500);
    }
    // Metrics-only: recorded, never tripped.
    set("metrics_only").await;
    for _ in 0..3 {
        assert_eq!(gw.get("/").await.status, 500);
    }
    let breaker = gw
        .admin("GET", "/api/v1/breakers/api", &[], b"")
        .await
        .json();
    assert_eq!(breaker["state"], "metrics_only");
    assert_eq!(breaker["window"]["failures"], 3);

    // Automatic: the next failure trips it; reset closes it again.
    set("automatic").await;
    assert_eq!(gw.get("/").await.status, 500);
    assert_eq!(gw.get("/").await.status, 503);
    status.set_status(200);
    let reset = gw
        .admin("POST", "/api/v1/breakers/api/reset", &[], b"")
        .await;
    assert_eq!(reset.json()["state"], "closed");
    assert_eq!(gw.get("/").await.status, 200);

    let history = gw
        .admin("GET", "/api/v1/breakers/api", &[], b"")
        .await
        .json();
    let reasons: Vec<&str> = history["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "operator",
            "operator",
            "operator",
            "operator",
            "consecutive_failures",
            "reset"
        ]
    );
    // The trip explains itself: what the upstream failed with, and the window then.
    let trip = history["transitions"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["reason"] == "consecutive_failures"))
        .expect("the trip is in the history")
        .clone();
    assert_eq!(
        trip["top_failure"],
        serde_json::json!({ "kind": "500", "count": 1 })
    );
    assert_eq!(trip["window"]["failures"], 1);

    let bad = gw
        .admin(
            "PUT",
            "/api/v1/breakers/api/state",
            &[],
            br#"{"state":"ajar"}"#,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        gw.admin("POST", "/api/v1/breakers/nope/reset", &[], b"")
            .await
            .status,
        404
    );
    let health = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    assert_eq!(health[0]["upstream"], "api");
    assert_eq!(health[0]["status"], "healthy");
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_is_not_on_the_traffic_port() {
    let origin = start_origin(echo("svc")).await;
    let token = TOKEN;
    let gw = gateway_with_token(&origin).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(
        gw.admin("GET", "/api/v1/breakers", &[], b"").await.status,
        401
    );
    let wrong = gw
        .admin(
            "GET",
            "/api/v1/breakers",
            &[("authorization", "Bearer nope")],
            b"",
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer"));
    assert_eq!(gw.admin("GET", "/metrics", &[], b"").await.status, 401);
    let right = gw
        .admin(
            "GET",
            "/api/v1/breakers",
            &[("authorization", &bearer)],
            b"",
        )
        .await;
    assert_eq!(right.status, 200);
    assert_eq!(right.json()[0]["upstream"], "api");
    // Probes stay open for orchestrators.
    assert_eq!(gw.admin("GET", "/health", &[], b"").await.status, 200);
    assert_eq!(gw.admin("GET", "/ready", &[], b"").await.status, 200);

    // On the traffic port the same path is just a request for the upstream.
    let proxied = gw.get("/api/v1/breakers").await;
    assert_eq!(proxied.json()["origin"], "svc");
}

#[test]
fn generated_alert_rules_carry_each_upstreams_thresholds_and_pass_promtool() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo.yaml");
    let out = Command::new(gateway_tests::gateway_binary())
        .args(["alerts", "--config"])
        .arg(&config)
        .output()
        .expect("gateway alerts runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = String::from_utf8_lossy(&out.stdout).into_owned();
    // market-data trips at a 0.5 failure rate: the warning sits at half of it.
    assert!(
        rules.contains("upstream=\"market-data\", outcome=~\"success|failure\"}[5m]))) > 0.25"),
        "{rules}"
    );
    // portfolio has a 1.5s slow-call threshold.
    assert!(
        rules.contains(
            "gateway_upstream_request_duration_seconds_bucket{upstream=\"portfolio\"}[5m]))) > 1.5"
        ),
        "{rules}"
    );
    // orders opens for 10s: ten open periods is less than the 3m floor.
    assert!(rules.contains("for: 3m"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, &rules).expect("write rules");
    promtool(&["check", "rules", &file.display().to_string()], "");
}

/// Label names, and the values seen for each, of every sample name in a scrape
/// (histograms under their `_bucket`, `_count` and `_sum` names).
type Families = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn families(scrape: &str) -> Families {
    let mut families = Families::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some((head, _value)) = line.trim_end().rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = head.split_once('{').unwrap_or((head, ""));
        let family = families.entry(name.to_string()).or_default();
        for pair in labels.trim_end_matches('}').split("\",") {
            if let Some((label, value)) = pair.split_once("=\"") {
                family
                    .entry(label.trim_start_matches(',').to_string())
                    .or_default()
                    .insert(value.trim_end_matches('"').to_string());
            }
        }
    }
    families
}

/// A label matcher: (label, operator, value).
type Matcher = (String, String, String);

/// One PromQL expression's use of the gateway's metrics: each selector (name, matchers
/// as (label, operator, value)), the labels named in `by (...)` / `on (...)`, and
/// `label_values(metric, label)` pairs (Grafana's variables).
#[derive(Debug, Default)]
struct Query {
    selectors: Vec<(String, Vec<Matcher>)>,
    grouping: Vec<String>,
}

fn parse_query(expr: &str) -> Query {
    let mut query = Query::default();
    let mut rest = expr;
    while let Some(at) = rest.find("gateway_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_string();
        let mut matchers = Vec::new();
        let after = &tail[end..];
        if let Some(inner) = after.strip_prefix('{') {
            let close = inner.find('}').expect("selector closes");
            for matcher in inner[..close].split(',').filter(|m| !m.trim().is_empty()) {
                let op_at = matcher.find(['=', '!']).expect("matcher operator");
                let label = matcher[..op_at].trim().to_string();
                let op_len = if matcher[op_at..].starts_with("=~")
                    || matcher[op_at..].starts_with("!~")
                    || matcher[op_at..].starts_with("!=")
                {
                    2
                } else {
                    1
                };
                let op = matcher[op_at..op_at + op_len].to_string();
                let value = matcher[op_at + op_len..]
                    .trim()
                    .trim_matches('"')
                    .to_string();
                matchers.push((label, op, value));
            }
        }
        query.selectors.push((name, matchers));
        rest = &tail[end..];
    }
    for keyword in ["by (", "on (", "by(", "on("] {
        let mut rest = expr;
        while let Some(at) = rest.find(keyword) {
            let inner = &rest[at + keyword.len()..];
            let close = inner.find(')').expect("grouping closes");
            query.grouping.extend(
                inner[..close]
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
            rest = &inner[close..];
        }
    }
    if let Some(args) = expr.strip_prefix("label_values(") {
        let args = args.trim_end_matches(')');
        if let Some((metric, label)) = args.split_once(',') {
            query.grouping.push(label.trim().to_string());
            query
                .selectors
                .push((metric.trim().to_string(), Vec::new()));
        }
    }
    query
}

/// Labels Prometheus adds by itself, not the gateway.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// What in `query` does not fit the scrape: a missing metric, a label the metric does
/// not carry (in a matcher, `by` or `on`), a matcher value the gateway never exports.
fn misfits(query: &Query, families: &Families) -> Vec<String> {
    let mut problems = Vec::new();
    let labels_of = |name: &str| {
        families
            .get(name)
            .or_else(|| families.get(&format!("{name}_bucket")))
    };
    for (name, matchers) in &query.selectors {
        let Some(labels) = labels_of(name) else {
            problems.push(format!("{name}: not exported"));
            continue;
        };
        for (label, op, value) in matchers {
            let Some(values) = labels.get(label) else {
                problems.push(format!("{name}: no label `{label}`"));
                continue;
            };
            // A Grafana variable matches whatever the operator picks.
            if value.contains('$') || op.starts_with('!') {
                continue;
            }
            let wanted: Vec<&str> = if op == "=~" {
                value.split('|').collect()
            } else {
                vec![value.as_str()]
            };
            for want in wanted {
                if !values.contains(want) {
                    problems.push(format!(
                        "{name}: {label}=\"{want}\" is never exported (seen: {values:?})"
                    ));
                }
            }
        }
        for label in &query.grouping {
            if !TARGET_LABELS.contains(&label.as_str()) && !labels.contains_key(label) {
                problems.push(format!(
                    "{name}: grouped by `{label}`, which it does not carry"
                ));
            }
        }
    }
    problems
}

/// The PromQL expressions of the dashboard: every `expr`, and the variables' queries.
fn dashboard_queries(dashboard: &serde_json::Value, out: &mut Vec<String>) {
    match dashboard {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(text)
                        if ["expr", "query", "definition"].contains(&key.as_str()) =>
                    {
                        out.push(text.clone());
                    }
                    other => dashboard_queries(other, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, out);
            }
        }
        _ => {}
    }
}

/// Each alert rule of the shipped rules file: (name, expression, annotations' text).
fn alert_rules(text: &str) -> Vec<(String, String, String)> {
    text.split("- alert:")
        .skip(1)
        .map(|rule| {
            let name = rule.lines().next().unwrap_or_default().trim().to_string();
            let expr_at = rule.find("expr:").expect("rule has expr");
            let expr_text = &rule[expr_at + "expr:".len()..];
            let expr_end = ["\n        for:", "\n        labels:"]
                .iter()
                .filter_map(|k| expr_text.find(k))
                .min()
                .expect("expr is followed by for or labels");
            let annotations = rule
                .split_once("annotations:")
                .map_or("", |(_, a)| a)
                .to_string();
            (name, expr_text[..expr_end].trim().to_string(), annotations)
        })
        .collect()
}

/// Every `gateway_*` metric the shipped dashboard and alert rules query must exist in
/// a real scrape with every label they match, group or print by, and every label value
/// they select, so that neither can drift from the code.
#[tokio::test]
async fn dashboard_and_alerts_only_use_exported_metrics_and_labels() {
    let origin = start_origin(echo("svc")).await;
    let plugins = format!(
        "plugins:\n{}",
        plugin_entry("rules", "status-latency-predicate", "predicate", "")
    );
    let gw = Gateway::start(&format!(
        "{plugins}upstreams:\n  api:\n    endpoints: [\"{}\"]\n    outlier_detection: {{}}\n    breaker: {{ predicate: rules }}\n  down:\n    endpoints: [\"{}\"]\n    breaker: {{ consecutive_failures: 1 }}\nroutes:\n  - {{ match: {{ path_prefix: /down }}, upstream: down }}\n  - {{ upstream: api }}\n",
        origin.addr(),
        gateway_tests::dead_address()
    ))
    .await;
    assert_eq!(gw.get("/").await.status, 200);
    // A trip (to="open"), a forced open, a fallback and a plugin call, so every family
    // and every label value the rules select has a sample.
    assert_eq!(gw.get("/down").await.status, 502);
    let forced = gw
        .admin(
            "PUT",
            "/api/v1/breakers/api/state",
            &[],
            br#"{"state":"forced_open"}"#,
        )
        .await;
    assert_eq!(forced.status, 200);
    assert_eq!(gw.get("/").await.status, 503);
    // Certificate metrics need a TLS listener: a second gateway serves one.
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = gateway_tests::tls::Ca::new("ca")
        .leaf(&["api.test"])
        .write(dir.path(), "api");
    let listener = format!(
        "    tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}\n",
        cert.display(),
        key.display()
    );
    let tls = Gateway::start_with_listener(&one_upstream(&[origin.addr()], ""), &listener).await;
    let scrape = gw.scrape().await + &tls.scrape().await;
    let families = families(&scrape);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");

    let dashboard_text =
        std::fs::read_to_string(root.join("config/grafana/dashboard.json")).expect("dashboard");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("dashboard is valid JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let mut problems = Vec::new();
    let mut selectors = 0;
    for expr in &queries {
        let query = parse_query(expr);
        selectors += query.selectors.len();
        problems.extend(
            misfits(&query, &families)
                .into_iter()
                .map(|p| format!("dashboard `{expr}`: {p}")),
        );
    }
    assert!(selectors >= 20, "the dashboard queries too few metrics");

    let alerts =
        std::fs::read_to_string(root.join("config/prometheus/alerts.yml")).expect("alerts");
    let rules = alert_rules(&alerts);
    assert!(rules.len() >= 8, "too few alert rules: {rules:?}");
    for (name, expr, annotations) in &rules {
        let query = parse_query(expr);
        problems.extend(
            misfits(&query, &families)
                .into_iter()
                .map(|p| format!("alert {name}: {p}")),
        );
        // A label the annotations print must survive the expression: kept by its
        // grouping, or (without one) carried by every metric in it.
        for printed in annotations.split("$labels.").skip(1) {
            let label: String = printed
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let kept = if query.grouping.is_empty() {
                query.selectors.iter().all(|(metric, _)| {
                    families
                        .get(metric)
                        .is_some_and(|labels| labels.contains_key(&label))
                })
            } else {
                query.grouping.contains(&label)
            };
            if !kept {
                problems.push(format!(
                    "alert {name}: prints $labels.{label}, which `{expr}` does not keep"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_label_check_catches_a_renamed_label_and_value() {
    // The check above, against a scrape where `upstream` became `service` and the
    // state `open` became `opened`: both must be reported.
    let scrape = "gateway_breaker_state{service=\"api\",state=\"opened\"} 1\n";
    let query = parse_query("sum by (upstream) (gateway_breaker_state{state=\"open\"})");
    let problems = misfits(&query, &families(scrape));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("state=\"open\" is never exported"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("grouped by `upstream`"),
        "{problems:?}"
    );
}

/// A breaker's state word, read through the admin API.
async fn breaker_state(gw: &Gateway) -> String {
    gw.admin("GET", "/api/v1/breakers/api", &[], b"")
        .await
        .json()["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_web_page_cannot_change_breaker_state() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    let forced = gw
        .admin(
            "PUT",
            "/api/v1/breakers/api/state",
            &[],
            br#"{"state":"forced_open"}"#,
        )
        .await;
    assert_eq!(forced.status, 200, "{}", forced.text());

    // The issue's request: a cross-origin POST without a content type.
    let evil = ("origin", "http://evil.example");
    let reset = gw
        .admin(
            "POST",
            "/api/v1/breakers/api/reset",
            &[evil, ("content-type", "text/plain")],
            b"",
        )
        .await;
    assert_eq!(reset.status, 403, "{}", reset.text());
    assert_eq!(reset.json()["code"], "CROSS_ORIGIN");
    assert!(
        reset.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("http://evil.example"))
    );
    // With the JSON content type (a preflighted request a page could try) still refused.
    let json_reset = gw
        .admin("POST", "/api/v1/breakers/api/reset", &[evil], b"")
        .await;
    assert_eq!(json_reset.status, 403);
    let disable = gw
        .admin(
            "PUT",
            "/api/v1/breakers/api/state",
            &[("origin", "null")],
            br#"{"state":"disabled"}"#,
        )
        .await;
    assert_eq!(disable.status, 403);
    // A browser's fetch metadata alone is enough to refuse.
    let cross_site = gw
        .admin(
            "POST",
            "/api/v1/breakers/api/reset",
            &[("sec-fetch-site", "cross-site")],
            b"",
        )
        .await;
    assert_eq!(cross_site.status, 403);
    assert_eq!(cross_site.json()["code"], "CROSS_SITE");
    assert_eq!(breaker_state(&gw).await, "forced_open");
    assert_eq!(gw.get("/").await.status, 503, "still forced open");

    // The admin's own origin (a page served by the admin itself) may.
    let own = format!("http://{}", gw.admin);
    let reset = gw
        .admin(
            "POST",
            "/api/v1/breakers/api/reset",
            &[("origin", &own), ("sec-fetch-site", "same-origin")],
            b"",
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(breaker_state(&gw).await, "closed");

    let scrape = gw.scrape().await;
    assert_eq!(
        sample(&scrape, "gateway_admin_refusals_total{reason=\"origin\"}"),
        Some(3.0),
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            "gateway_admin_refusals_total{reason=\"fetch_site\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn dns_rebinding_hosts_are_refused_on_every_admin_path() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    let rebound = format!("evil.example:{}", gw.admin.port());
    for path in [
        "/admin/config",
        "/metrics",
        "/api/v1/breakers",
        "/health",
        "/ready",
    ] {
        let response = gw.admin("GET", path, &[("host", &rebound)], b"").await;
        assert_eq!(response.status, 421, "{path}: {}", response.text());
        assert_eq!(response.json()["code"], "MISDIRECTED_HOST", "{path}");
        assert!(!response.text().contains("hash"), "{path} leaked config");
    }
    gw.wait_for_log(&["admin request refused", "reason=host", "evil.example"])
        .await;

    let port = gw.admin.port();
    let fine = [
        gw.admin.to_string(),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "LocalHost".to_string(),
        // An SSH or kubectl port-forward changes the port.
        "localhost:18001".to_string(),
    ];
    for host in &fine {
        let response = gw
            .admin("GET", "/admin/config", &[("host", host)], b"")
            .await;
        assert_eq!(response.status, 200, "{host}: {}", response.text());
        assert!(response.json()["hash"].is_string());
    }
    for host in [
        format!("localhost.evil.example:{port}"),
        format!("app.localhost:{port}"),
        format!("10.0.0.1:{port}"),
        "2130706433".to_string(),
    ] {
        let response = gw.admin("GET", "/metrics", &[("host", &host)], b"").await;
        assert_eq!(response.status, 421, "{host}");
    }

    // Raw requests: an absolute target naming another host, two Host headers,
    // HTTP/1.1 without Host (400), HTTP/1.0 without Host (allowed: no browser sends it).
    let try_raw = |request: String| {
        let admin = gw.admin;
        async move {
            let mut conn = gateway_tests::http::Conn::connect(admin)
                .await
                .expect("connect");
            conn.send_raw(request.as_bytes()).await.expect("send");
            conn.response().await
        }
    };
    let raw = async |request: String| try_raw(request).await.expect("response");
    // Pingora itself drops a request whose target names another host than `Host`.
    let mismatch = try_raw(format!(
        "GET http://evil.example:{port}/admin/config HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n"
    ))
    .await;
    assert!(mismatch.is_err(), "answered: {mismatch:?}");
    let absolute = raw(format!(
        "GET http://evil.example:{port}/admin/config HTTP/1.0\r\n\r\n"
    ))
    .await;
    assert_eq!(absolute.status, 421, "{}", absolute.text());
    // And one with two Host headers.
    let twice = try_raw(format!(
        "GET /metrics HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nhost: evil.example\r\n\r\n"
    ))
    .await;
    assert!(twice.is_err(), "answered: {twice:?}");
    let no_host_11 = raw("GET /metrics HTTP/1.1\r\n\r\n".to_string()).await;
    assert_eq!(no_host_11.status, 400);
    assert_eq!(no_host_11.json()["code"], "BAD_HOST");
    let no_host_10 = raw("GET /ready HTTP/1.0\r\n\r\n".to_string()).await;
    assert_eq!(no_host_10.status, 200, "{}", no_host_10.text());

    let refused = gw
        .metric("gateway_admin_refusals_total{reason=\"host\"}")
        .await;
    assert_eq!(refused, 5.0 + 4.0 + 2.0);
}

#[tokio::test]
async fn allowed_hosts_admit_a_name_and_its_origin() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start_with(
        &one_upstream(&[origin.addr()], ""),
        Options {
            admin_keys: Some("allowed_hosts: [\"GW-Admin.internal\"]"),
            ..Options::default()
        },
    )
    .await;
    let named = gw
        .admin("GET", "/metrics", &[("host", "gw-admin.internal:443")], b"")
        .await;
    assert_eq!(named.status, 200, "{}", named.text());
    let other = gw
        .admin(
            "GET",
            "/metrics",
            &[("host", "gw-admin.internal.evil")],
            b"",
        )
        .await;
    assert_eq!(other.status, 421);
    // Reached through a TLS proxy under that name: the browser's origin is https.
    let reset = gw
        .admin(
            "POST",
            "/api/v1/breakers/api/reset",
            &[
                ("host", "gw-admin.internal"),
                ("origin", "https://gw-admin.internal"),
            ],
            b"",
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.text());
}

#[tokio::test]
async fn state_changes_need_the_json_content_type_and_are_audited() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    // No Content-Type at all (raw: the harness would add one).
    let mut conn = gateway_tests::http::Conn::connect(gw.admin)
        .await
        .expect("connect");
    let bare = format!(
        "PUT /api/v1/breakers/api/state HTTP/1.1\r\nhost: {}\r\ncontent-length: 23\r\n\r\n{{\"state\":\"forced_open\"}}",
        gw.admin
    );
    conn.send_raw(bare.as_bytes()).await.expect("send");
    let response = conn.response().await.expect("response");
    assert_eq!(response.status, 415, "{}", response.text());
    assert_eq!(response.json()["code"], "UNSUPPORTED_MEDIA_TYPE");
    // What an HTML form or `curl -d` sends.
    for value in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = gw
            .admin(
                "PUT",
                "/api/v1/breakers/api/state",
                &[("content-type", value)],
                br#"{"state":"forced_open"}"#,
            )
            .await;
        assert_eq!(response.status, 415, "{value}: {}", response.text());
    }
    assert_eq!(breaker_state(&gw).await, "closed");
    let reload = gw
        .admin(
            "POST",
            "/admin/reload",
            &[("content-type", "text/plain")],
            b"",
        )
        .await;
    assert_eq!(reload.status, 415);
    assert_eq!(
        gw.metric("gateway_admin_refusals_total{reason=\"content_type\"}")
            .await,
        4.0
    );

    // Accepted with the JSON content type, and the audit line names the client.
    let stream = tokio::net::TcpStream::connect(gw.admin)
        .await
        .expect("connect");
    let peer = stream.local_addr().expect("local address").to_string();
    let mut conn = gateway_tests::http::Conn::over(stream);
    let host = gw.admin.to_string();
    let forced = conn
        .request(
            "PUT",
            "/api/v1/breakers/api/state",
            &[
                ("host", &host),
                ("content-type", "application/json; charset=utf-8"),
            ],
            br#"{"state":"forced_open"}"#,
        )
        .await
        .expect("request");
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(breaker_state(&gw).await, "forced_open");
    let line = gw
        .wait_for_log(&["gateway::audit", &peer, "status=200"])
        .await;
    for fragment in [
        "PUT",
        "/api/v1/breakers/api/state",
        "token=not_required",
        "result=ok",
    ] {
        assert!(line.contains(fragment), "{fragment} missing in: {line}");
    }
    let reload = conn
        .request(
            "POST",
            "/admin/reload",
            &[("host", &host), ("content-type", "application/json")],
            b"",
        )
        .await
        .expect("request");
    assert_eq!(reload.status, 200, "{}", reload.text());
    gw.wait_for_log(&["gateway::audit", &peer, "/admin/reload", "result=unchanged"])
        .await;
    // Refused state changes are audited too.
    gw.wait_for_log(&[
        "gateway::audit",
        "status=415",
        "result=UNSUPPORTED_MEDIA_TYPE",
    ])
    .await;
}

#[tokio::test]
async fn the_audit_log_says_whether_the_token_was_valid() {
    let origin = start_origin(echo("svc")).await;
    let token = TOKEN;
    let gw = gateway_with_token(&origin).await;
    let wrong = gw
        .admin(
            "POST",
            "/api/v1/breakers/api/reset",
            &[("authorization", "Bearer wrong-token-0123456789")],
            b"",
        )
        .await;
    assert_eq!(wrong.status, 401);
    gw.wait_for_log(&["gateway::audit", "token=invalid", "status=401"])
        .await;
    let bearer = format!("Bearer {token}");
    let right = gw
        .admin(
            "POST",
            "/api/v1/breakers/api/reset",
            &[("authorization", &bearer)],
            b"",
        )
        .await;
    assert_eq!(right.status, 200);
    let line = gw
        .wait_for_log(&["gateway::audit", "token=valid", "status=200"])
        .await;
    assert!(!line.contains(token), "the token itself is never logged");
    // The Host check comes before the token: a rebinding page learns nothing more.
    let rebound = gw
        .admin(
            "GET",
            "/metrics",
            &[("host", "evil.example"), ("authorization", &bearer)],
            b"",
        )
        .await;
    assert_eq!(rebound.status, 421);
}

#[test]
fn allowed_hosts_entries_must_be_plain_names_or_addresses() {
    let yaml = "listeners:\n  - address: \"127.0.0.1:8080\"\nadmin:\n  address: \"127.0.0.1:9901\"\n  allowed_hosts: [\"gw.internal\", \"http://gw.internal\", \"*.internal\", \"gw.internal:9901\", \"[::1]\", \"10.0.0.5\"]\nupstreams:\n  api: { endpoints: [\"127.0.0.1:9\"] }\nroutes:\n  - { upstream: api }\n";
    let (code, _, stderr) = gateway_tests::check_config("gateway.yaml", yaml);
    assert_eq!(code, 2, "{stderr}");
    for (index, entry) in [
        (1, "http://gw.internal"),
        (2, "*.internal"),
        (3, "gw.internal:9901"),
    ] {
        assert!(
            stderr.contains(&format!(
                "admin.allowed_hosts[{index}]: `{entry}` is not a host name or IP address"
            )),
            "{entry}: {stderr}"
        );
    }
    assert!(stderr.starts_with("3 errors in config"), "{stderr}");
}
