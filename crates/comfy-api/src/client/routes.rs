//! The JSON routes of [`NodeClient`]: probe, submit, history, control and discovery.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{NodeClient, classify};
use crate::error::{Error, ErrorKind};
use crate::types::{
    Features, FreeRequest, History, HistoryEntry, Job, JobList, JobsQuery, ObjectInfo,
    PromptAccepted, PromptInfo, PromptRequest, QueueState, SystemStats,
};

/// Characters escaped in one path segment: everything but unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl NodeClient {
    /// `GET /system_stats`: versions, RAM and compute device.
    pub async fn system_stats(&self) -> Result<SystemStats, Error> {
        let route = "/system_stats";
        self.call_json(route, self.request(Method::GET, self.url(route)?))
            .await
    }

    /// `GET /queue`: running and pending prompts (pending sorted in execution order).
    pub async fn queue(&self) -> Result<QueueState, Error> {
        let route = "/queue";
        self.call_json(route, self.request(Method::GET, self.url(route)?))
            .await
    }

    /// `GET /prompt`: the number of running plus pending prompts (cheaper than [`Self::queue`]).
    pub async fn queue_remaining(&self) -> Result<u64, Error> {
        let route = "/prompt";
        let info: PromptInfo = self
            .call_json(route, self.request(Method::GET, self.url(route)?))
            .await?;
        Ok(info.exec_info.queue_remaining)
    }

    /// `POST /prompt`: validates and queues a workflow.
    ///
    /// A 400 answer becomes [`ErrorKind::PromptRejected`]. A success may still carry
    /// `node_errors` (outputs that will not run). A lost answer must not be blindly retried:
    /// the node does not deduplicate prompt ids (look the id up in `/queue` and `/history`).
    pub async fn prompt(&self, request: &PromptRequest) -> Result<PromptAccepted, Error> {
        let route = "/prompt";
        let body = serde_json::to_vec(request).map_err(|e| {
            self.err(ErrorKind::InvalidRequest(format!(
                "{route}: cannot encode body: {e}"
            )))
        })?;
        let req = self
            .request(Method::POST, self.url(route)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.call_json(route, req).await
    }

    /// `GET /history/{prompt_id}`: the entry of a finished prompt, `None` when the node has
    /// none (unknown, still pending/running, evicted, or the node restarted).
    pub async fn history_entry(&self, prompt_id: &str) -> Result<Option<HistoryEntry>, Error> {
        let route = format!("/history/{}", segment(prompt_id));
        let history: History = self
            .call_json(&route, self.request(Method::GET, self.url(&route)?))
            .await?;
        Ok(history.into_entry(prompt_id))
    }

    /// `GET /history?max_items&offset`: finished prompts, oldest first. `max_items` alone
    /// returns the newest N; with `offset` the M oldest are skipped first.
    pub async fn history(
        &self,
        max_items: Option<u64>,
        offset: Option<u64>,
    ) -> Result<History, Error> {
        let route = "/history";
        let mut url = self.url(route)?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(n) = max_items {
                q.append_pair("max_items", &n.to_string());
            }
            if let Some(o) = offset {
                q.append_pair("offset", &o.to_string());
            }
        }
        let url = if url.query() == Some("") {
            self.url(route)?
        } else {
            url
        };
        self.call_json(route, self.request(Method::GET, url)).await
    }

    /// `POST /history {"delete": [...]}`: forgets these finished prompts.
    pub async fn history_delete(&self, prompt_ids: &[&str]) -> Result<(), Error> {
        self.post_json("/history", &json!({ "delete": prompt_ids }))
            .await
    }

    /// `POST /history {"clear": true}`: forgets every finished prompt.
    pub async fn history_clear(&self) -> Result<(), Error> {
        self.post_json("/history", &json!({ "clear": true })).await
    }

    /// `POST /interrupt`: stops whatever prompt is running. Prefer
    /// [`Self::interrupt_prompt`]: a global interrupt can hit the next prompt if the running
    /// one finishes first.
    pub async fn interrupt(&self) -> Result<(), Error> {
        self.post_json("/interrupt", &json!({})).await
    }

    /// `POST /interrupt {"prompt_id"}`: stops `prompt_id` only if it is the running prompt
    /// (a no-op otherwise; nodes older than Sept 2025 treat it as a global interrupt).
    pub async fn interrupt_prompt(&self, prompt_id: &str) -> Result<(), Error> {
        self.post_json("/interrupt", &json!({ "prompt_id": prompt_id }))
            .await
    }

    /// `POST /queue {"delete": [...]}`: removes pending prompts (running ones are unaffected;
    /// unknown ids are ignored).
    pub async fn queue_delete(&self, prompt_ids: &[&str]) -> Result<(), Error> {
        self.post_json("/queue", &json!({ "delete": prompt_ids }))
            .await
    }

    /// `POST /queue {"clear": true}`: removes every pending prompt (of every user).
    pub async fn queue_clear(&self) -> Result<(), Error> {
        self.post_json("/queue", &json!({ "clear": true })).await
    }

    /// `POST /free`: unloads models and/or frees memory (applied after the running prompt).
    pub async fn free(&self, request: FreeRequest) -> Result<(), Error> {
        self.post_json("/free", &json!(request)).await
    }

    /// `GET /object_info`: every installed node class.
    pub async fn object_info(&self) -> Result<ObjectInfo, Error> {
        let route = "/object_info";
        self.call_json(route, self.request(Method::GET, self.url(route)?))
            .await
    }

    /// `GET /object_info` as the node sent it, class by class, for a caller that relays it to
    /// ComfyUI clients unchanged (the typed [`ObjectInfo`] reads it into this crate's own
    /// shapes, which no ComfyUI client understands).
    pub async fn object_info_raw(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        let route = "/object_info";
        self.call_json(route, self.request(Method::GET, self.url(route)?))
            .await
    }

    /// `GET /object_info/{class}`: one node class, `None` when not installed.
    pub async fn object_info_class(
        &self,
        class: &str,
    ) -> Result<Option<crate::types::NodeInfo>, Error> {
        let route = format!("/object_info/{}", segment(class));
        let mut info: ObjectInfo = self
            .call_json(&route, self.request(Method::GET, self.url(&route)?))
            .await?;
        if let Some(reason) = info.undecodable.remove(class) {
            return Err(self.err(ErrorKind::Decode {
                route,
                path: class.to_owned(),
                message: reason,
            }));
        }
        Ok(info.nodes.remove(class))
    }

    /// `GET /models`: the model folder names (`checkpoints`, `loras`, ...).
    pub async fn models(&self) -> Result<Vec<String>, Error> {
        let route = "/models";
        self.call_json(route, self.request(Method::GET, self.url(route)?))
            .await
    }

    /// `GET /models/{folder}`: model files in a folder (paths relative to it).
    /// An unknown folder gives [`ErrorKind::UnknownModelFolder`].
    pub async fn models_in(&self, folder: &str) -> Result<Vec<String>, Error> {
        let route = format!("/models/{}", segment(folder));
        let resp = self
            .send(&route, self.request(Method::GET, self.url(&route)?))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(self.err(ErrorKind::UnknownModelFolder {
                folder: folder.to_owned(),
            }));
        }
        let status = resp.status();
        let body = self.read_body(&route, resp).await?;
        if !status.is_success() {
            return Err(self.err(classify(&route, status, &body)));
        }
        self.decode(&route, &body)
    }

    /// `GET /features`: the node's feature flags.
    pub async fn features(&self) -> Result<Features, Error> {
        let route = "/features";
        self.call_json(route, self.request(Method::GET, self.url(route)?))
            .await
    }

    /// `GET /embeddings`: embedding names.
    pub async fn embeddings(&self) -> Result<Vec<String>, Error> {
        let route = "/embeddings";
        self.call_json(route, self.request(Method::GET, self.url(route)?))
            .await
    }

    /// `GET /api/jobs`: lists jobs. Nodes without the jobs API give
    /// [`ErrorKind::JobsApiUnavailable`].
    pub async fn jobs(&self, query: &JobsQuery) -> Result<JobList, Error> {
        let route = "/api/jobs";
        let mut url = self.url_exact(route)?;
        let pairs = query.to_pairs();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        let resp = self.send(route, self.request(Method::GET, url)).await?;
        let status = resp.status();
        let body = self.read_body(route, resp).await?;
        match status {
            s if s.is_success() => self.decode(route, &body),
            StatusCode::NOT_FOUND => Err(self.err(ErrorKind::JobsApiUnavailable {
                route: route.into(),
            })),
            s => Err(self.err(classify(route, s, &body))),
        }
    }

    /// `GET /api/jobs/{id}`: one job with its outputs and workflow.
    pub async fn job(&self, job_id: &str) -> Result<Job, Error> {
        let route = format!("/api/jobs/{}", segment(job_id));
        let resp = self
            .send(&route, self.request(Method::GET, self.url_exact(&route)?))
            .await?;
        let status = resp.status();
        let body = self.read_body(&route, resp).await?;
        match status {
            s if s.is_success() => self.decode(&route, &body),
            // The jobs API answers a JSON `{"error": ...}`; a node without it answers an
            // empty (static handler) 404.
            StatusCode::NOT_FOUND
                if serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|v| v.get("error").is_some()) =>
            {
                Err(self.err(ErrorKind::JobNotFound {
                    job_id: job_id.to_owned(),
                }))
            }
            StatusCode::NOT_FOUND => Err(self.err(ErrorKind::JobsApiUnavailable { route })),
            s => Err(self.err(classify(&route, s, &body))),
        }
    }

    /// Says whether the node has the jobs API (probes `GET /api/jobs?limit=1`).
    pub async fn jobs_available(&self) -> Result<bool, Error> {
        let query = JobsQuery {
            limit: Some(1),
            ..JobsQuery::default()
        };
        match self.jobs(&query).await {
            Ok(_) => Ok(true),
            Err(Error {
                kind: ErrorKind::JobsApiUnavailable { .. },
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn post_json(&self, route: &str, body: &serde_json::Value) -> Result<(), Error> {
        let req = self
            .request(Method::POST, self.url(route)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.call_empty(route, req).await
    }
}
