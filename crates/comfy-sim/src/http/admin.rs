//! The emulator's own `/__sim/*` routes: state snapshot, faults, crash. Every change is logged.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppState, json_resp, read_json};

pub(super) async fn admin_state(State(st): State<AppState>) -> Response {
    json_resp(StatusCode::OK, &crate::admin_snapshot(&st.shared))
}

pub(super) async fn admin_faults(State(st): State<AppState>, req: Request) -> Response {
    let body = match read_json(&st.shared, req.into_body()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut g = st.shared.lock();
    let mut current = serde_json::to_value(&g.faults).unwrap_or(json!({}));
    if let (Value::Object(cur), Value::Object(update)) = (&mut current, body) {
        for (k, v) in update {
            cur.insert(k, v);
        }
    }
    match serde_json::from_value(current) {
        Ok(faults) => {
            tracing::warn!(node = %st.shared.config.name, faults = ?faults, "faults changed");
            g.faults = faults;
            json_resp(
                StatusCode::OK,
                &serde_json::to_value(&g.faults).unwrap_or(json!({})),
            )
        }
        Err(e) => json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("bad faults: {e}")}),
        ),
    }
}

pub(super) async fn admin_crash(State(st): State<AppState>) -> Response {
    tracing::warn!(node = %st.shared.config.name, "fault: crash requested");
    let _ = st.crash_tx.send(());
    StatusCode::OK.into_response()
}
