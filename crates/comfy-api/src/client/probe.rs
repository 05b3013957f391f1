//! [`NodeClient::probe`]: the two reads of a health probe, made cheap enough to run against
//! every node of a large fleet every second.
//!
//! Compared with calling [`NodeClient::system_stats`] and [`NodeClient::queue`], a probe uses
//! URLs built once per client, one deadline (one timer) for both requests instead of one per
//! request, and the lean decoders of [`crate::types::probe`], which check the answers as
//! strictly as the full types but keep only what a probe reads.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{NodeClient, route_url};
use crate::error::{Error, ErrorKind};
use crate::types::{QueueSummary, StatsSummary};

/// The routes a probe reads.
const SYSTEM_STATS: &str = "/system_stats";
const QUEUE: &str = "/queue";

/// The probe routes' URLs of one client.
#[derive(Debug)]
pub(super) struct ProbeUrls {
    system_stats: url::Url,
    queue: url::Url,
}

impl ProbeUrls {
    pub(super) fn new(base: &url::Url, api_prefix: bool) -> Self {
        Self {
            system_stats: route_url(base, api_prefix, SYSTEM_STATS),
            queue: route_url(base, api_prefix, QUEUE),
        }
    }
}

/// What one probe read: the compute device and the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `GET /system_stats`, reduced to the compute device.
    pub stats: StatsSummary,
    /// `GET /queue`, reduced to counts and prompt ids.
    pub queue: QueueSummary,
}

impl NodeClient {
    /// Probes the node: `GET /system_stats`, then `GET /queue`, both within `timeout`
    /// (bounded by the client's `request_timeout`). A deadline that passes gives
    /// [`ErrorKind::Timeout`] naming the route that was being read; every other failure is
    /// reported as by [`Self::system_stats`] and [`Self::queue`], and an answer either of them
    /// would refuse is refused here too.
    pub async fn probe(&self, timeout: Duration) -> Result<Probe, Error> {
        let after = timeout.min(self.inner.config.request_timeout);
        let deadline = tokio::time::sleep(after);
        tokio::pin!(deadline);
        let urls = &self.inner.probe_urls;
        let stats = self
            .probe_get(SYSTEM_STATS, &urls.system_stats, deadline.as_mut(), after)
            .await?;
        let queue = self
            .probe_get(QUEUE, &urls.queue, deadline.as_mut(), after)
            .await?;
        Ok(Probe { stats, queue })
    }

    async fn probe_get<T: DeserializeOwned>(
        &self,
        route: &str,
        url: &url::Url,
        deadline: std::pin::Pin<&mut tokio::time::Sleep>,
        after: Duration,
    ) -> Result<T, Error> {
        // No per-request timeout: the probe's one deadline bounds both requests.
        let call = self.call_json(route, self.inner.http.get(url.clone()));
        tokio::select! {
            biased;
            result = call => result,
            () = deadline => Err(self.err(ErrorKind::Timeout {
                route: route.to_owned(),
                after,
            })),
        }
    }
}
