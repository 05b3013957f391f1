//! Tests of the event logs: order, fan-out, slow and late watchers, previews, retention.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::job::{JobEvent, JobId, UiValues};

fn log_for_test(capacity: usize) -> Arc<EventLog> {
    Arc::new(EventLog::new(JobId::new(), capacity, 1000))
}

fn progress(value: u64) -> JobEvent {
    JobEvent::Progress {
        node_id: "3".into(),
        value,
        max: 1_000_000,
    }
}

fn preview(tag: u8) -> JobEvent {
    JobEvent::PreviewImage {
        node_id: Some("3".into()),
        content_type: "image/jpeg".into(),
        bytes: Bytes::from(vec![tag; 4]),
    }
}

fn done() -> JobEvent {
    JobEvent::Succeeded {
        outputs: vec![],
        ui_values: UiValues::new(),
    }
}

/// Reads items until the log ends, returning the sequence numbers of the events read.
async fn drain_sequences(watcher: &mut Watcher) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Some(item) = watcher.next().await {
        match item.expect("no lag expected") {
            WatchItem::Event(e) => seen.push(e.sequence),
            WatchItem::Preview(_) => panic!("preview delivered to a watcher that did not ask"),
        }
    }
    seen
}

#[tokio::test]
async fn events_are_numbered_from_one_and_read_in_order() {
    let log = log_for_test(16);
    assert_eq!(log.append(JobEvent::Started).expect("open"), Some(1));
    assert_eq!(log.append(progress(1)).expect("open"), Some(2));
    assert_eq!(log.append(done()).expect("open"), Some(3));
    let mut watcher = log.watch(WatchFrom::Oldest, false).expect("admitted");
    assert_eq!(drain_sequences(&mut watcher).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn terminal_event_closes_the_log() {
    let log = log_for_test(16);
    log.append(JobEvent::Cancelled {
        reason: "caller".into(),
    })
    .expect("open");
    assert!(log.closed_at().is_some());
    assert_eq!(
        log.append(JobEvent::Started),
        Err(EventLogError::Closed { job: log.job_id() }),
        "nothing may follow a terminal event"
    );
    assert_eq!(
        log.append(preview(1)),
        Err(EventLogError::Closed { job: log.job_id() })
    );
    assert_eq!(log.last_sequence(), 1);
}

#[tokio::test]
async fn waiting_watcher_wakes_on_append() {
    let log = log_for_test(16);
    let mut watcher = log.watch(WatchFrom::Live, false).expect("admitted");
    let reader = tokio::spawn(async move { drain_sequences(&mut watcher).await });
    tokio::task::yield_now().await;
    log.append(JobEvent::Started).expect("open");
    log.append(done()).expect("open");
    let seen = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("watcher must wake and finish")
        .expect("reader task");
    assert_eq!(seen, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_watchers_each_see_every_event_in_order() {
    const NUM_EVENTS: u64 = 2000;
    const NUM_WATCHERS: usize = 32;
    let log = log_for_test(NUM_EVENTS as usize + 1);
    let readers: Vec<_> = (0..NUM_WATCHERS)
        .map(|_| {
            let mut watcher = log.watch(WatchFrom::Oldest, false).expect("admitted");
            tokio::spawn(async move { drain_sequences(&mut watcher).await })
        })
        .collect();

    let appender = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            for value in 1..NUM_EVENTS {
                log.append(progress(value)).expect("open");
                if value % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            log.append(done()).expect("open");
        })
    };
    appender.await.expect("appender");

    let expected: Vec<u64> = (1..=NUM_EVENTS).collect();
    for reader in readers {
        let seen = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("every watcher finishes")
            .expect("reader task");
        assert_eq!(
            seen, expected,
            "each watcher sees every event once, in order"
        );
    }
}

#[tokio::test]
async fn slow_watcher_gets_lagged_then_continues_from_oldest_retained() {
    let log = log_for_test(8);
    let mut slow = log.watch(WatchFrom::Oldest, false).expect("admitted");
    // The appender does not wait for the watcher that reads nothing.
    for value in 1..=20 {
        log.append(progress(value)).expect("open");
    }
    assert_eq!(log.retained().len(), 8, "the log stays within capacity");
    assert_eq!(log.oldest_retained(), 13);

    let lag = slow.next().await.expect("not closed").expect_err("lagged");
    assert_eq!(lag, Lagged::new(1, 13));
    assert_eq!(
        (
            lag.first_missing(),
            lag.last_missing(),
            lag.oldest_retained()
        ),
        (1, 12, 13),
        "events 1 to 12 were missed"
    );
    assert_eq!(
        slow.cursor(),
        12,
        "cursor moves to just before the oldest retained event"
    );
    let mut seen = Vec::new();
    while let Some(Some(item)) = slow.try_next() {
        let WatchItem::Event(event) = item.expect("no second lag") else {
            panic!("no previews")
        };
        seen.push(event.sequence);
    }
    assert_eq!(
        seen,
        (13..=20).collect::<Vec<_>>(),
        "reading resumes at the oldest retained"
    );
    log.append(done()).expect("open");
    assert_eq!(drain_sequences(&mut slow).await, vec![21]);
}

#[tokio::test]
async fn slow_watcher_does_not_hold_back_a_fast_one() {
    let log = log_for_test(4);
    let _slow = log.watch(WatchFrom::Live, false).expect("admitted");
    let mut fast = log.watch(WatchFrom::Live, false).expect("admitted");
    for value in 1..=100 {
        log.append(progress(value)).expect("open");
        let item = fast
            .next()
            .await
            .expect("open")
            .expect("fast watcher never lags");
        let WatchItem::Event(event) = item else {
            panic!("no previews asked")
        };
        assert_eq!(event.sequence, value);
    }
}

#[tokio::test]
async fn resumed_watcher_gets_the_events_after_its_cursor() {
    let log = log_for_test(64);
    for value in 1..=10 {
        log.append(progress(value)).expect("open");
    }
    let mut resumed = log.watch(WatchFrom::After(6), false).expect("admitted");
    log.append(done()).expect("open");
    assert_eq!(drain_sequences(&mut resumed).await, vec![7, 8, 9, 10, 11]);
}

#[tokio::test]
async fn resume_from_a_cursor_ahead_of_the_log_is_refused() {
    let log = log_for_test(64);
    log.append(JobEvent::Started).expect("open");
    for after in [2, 50, u64::MAX] {
        assert_eq!(
            log.watch(WatchFrom::After(after), false).err(),
            Some(EventLogError::AheadOfLog {
                job: log.job_id(),
                after,
                last: 1
            }),
            "no watcher can have read event {after} (e.g. one from before a restart): refused \
             rather than silently skipping or replaying"
        );
    }
    assert_eq!(log.num_watchers(), 0, "a refused watcher holds no place");
    // The last event itself is a valid cursor, also once the log is closed.
    let mut live = log.watch(WatchFrom::After(1), false).expect("admitted");
    log.append(done()).expect("open");
    assert_eq!(drain_sequences(&mut live).await, vec![2]);
    let mut after_end = log.watch(WatchFrom::After(2), false).expect("admitted");
    assert_eq!(drain_sequences(&mut after_end).await, Vec::<u64>::new());
    assert!(matches!(
        log.watch(WatchFrom::After(3), false),
        Err(EventLogError::AheadOfLog {
            after: 3,
            last: 2,
            ..
        })
    ));
}

/// Reads a watcher to the end; returns the events read and the missing ranges reported.
fn read_all(watcher: &mut Watcher) -> (Vec<u64>, Vec<(u64, u64)>) {
    let (mut events, mut gaps) = (Vec::new(), Vec::new());
    while let Some(item) = watcher.try_next() {
        match item {
            None => break,
            Some(Ok(WatchItem::Event(event))) => events.push(event.sequence),
            Some(Ok(WatchItem::Preview(_))) => panic!("no previews asked"),
            Some(Err(lag)) => gaps.push((lag.first_missing(), lag.last_missing())),
        }
    }
    (events, gaps)
}

#[tokio::test]
async fn every_gap_runs_forwards_and_with_the_events_covers_what_follows_the_cursor() {
    for capacity in 1..=6 {
        for total in 0..=12 {
            for after in 0..=total {
                let log = log_for_test(capacity);
                for value in 1..=total {
                    log.append(progress(value)).expect("open");
                }
                let mut watcher = log.watch(WatchFrom::After(after), false).expect("admitted");
                // More events while the watcher reads nothing, then the end.
                for value in 1..=capacity as u64 {
                    log.append(progress(value)).expect("open");
                }
                log.append(done()).expect("open");
                let last = log.last_sequence();
                let (events, gaps) = read_all(&mut watcher);
                let case = format!("capacity {capacity}, {total} events, after {after}");
                let mut covered = Vec::new();
                for &(from, to) in &gaps {
                    assert!(from <= to, "{case}: gap {from}..={to} runs backwards");
                    covered.extend(from..=to);
                }
                covered.extend(&events);
                assert_eq!(
                    covered,
                    (after + 1..=last).collect::<Vec<_>>(),
                    "{case}: gaps {gaps:?} then events {events:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn late_watchers_get_replay_or_live_events_as_asked() {
    let log = log_for_test(64);
    for value in 1..=5 {
        log.append(progress(value)).expect("open");
    }
    let mut replay = log.watch(WatchFrom::Oldest, false).expect("admitted");
    let mut live = log.watch(WatchFrom::Live, false).expect("admitted");
    assert_eq!(
        live.cursor(),
        5,
        "a live watcher starts after the newest event"
    );
    log.append(progress(6)).expect("open");
    log.append(done()).expect("open");
    assert_eq!(
        drain_sequences(&mut replay).await,
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(drain_sequences(&mut live).await, vec![6, 7]);
}

#[tokio::test]
async fn watcher_joining_a_closed_log_reads_the_end_and_finishes() {
    let log = log_for_test(64);
    log.append(JobEvent::Started).expect("open");
    log.append(done()).expect("open");
    let mut late = log.watch(WatchFrom::After(1), false).expect("admitted");
    let item = late
        .next()
        .await
        .expect("terminal event is still readable")
        .expect("no lag");
    let WatchItem::Event(event) = item else {
        panic!("expected the terminal event")
    };
    assert!(event.event.is_terminal());
    assert_eq!(
        late.next().await,
        None,
        "the watch ends after the terminal event"
    );
}

#[tokio::test]
async fn previews_go_only_to_watchers_that_asked_and_take_no_sequence_number() {
    let log = log_for_test(64);
    let mut with_previews = log.watch(WatchFrom::Live, true).expect("admitted");
    let mut without = log.watch(WatchFrom::Live, false).expect("admitted");

    assert_eq!(log.append(JobEvent::Started).expect("open"), Some(1));
    assert_eq!(
        log.append(preview(1)).expect("open"),
        None,
        "previews are unnumbered"
    );
    assert_eq!(log.append(progress(1)).expect("open"), Some(2));

    // Numbered events come first, then the latest preview.
    let mut items = Vec::new();
    while let Some(Some(item)) = with_previews.try_next() {
        items.push(item.expect("no lag"));
    }
    assert_eq!(items.len(), 3, "two events and one preview");
    assert!(matches!(&items[2], WatchItem::Preview(p) if **p == preview(1)));

    // A slow preview watcher skips superseded previews.
    log.append(preview(2)).expect("open");
    log.append(preview(3)).expect("open");
    let item = with_previews
        .try_next()
        .expect("ready")
        .expect("open")
        .expect("no lag");
    assert!(
        matches!(item, WatchItem::Preview(p) if *p == preview(3)),
        "only the latest"
    );
    assert_eq!(with_previews.try_next(), None, "nothing more is ready");

    log.append(done()).expect("open");
    assert_eq!(drain_sequences(&mut without).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn watcher_limit_is_enforced_and_freed_on_drop() {
    let log = Arc::new(EventLog::new(JobId::new(), 8, 2));
    let first = log.watch(WatchFrom::Live, false).expect("first admitted");
    let _second = log.watch(WatchFrom::Live, false).expect("second admitted");
    assert_eq!(
        log.watch(WatchFrom::Live, false).err(),
        Some(EventLogError::TooManyWatchers {
            job: log.job_id(),
            max: 2
        })
    );
    drop(first);
    assert_eq!(log.num_watchers(), 1);
    log.watch(WatchFrom::Live, false)
        .expect("a dropped watcher frees its place");
}

#[tokio::test(start_paused = true)]
async fn hub_purges_closed_logs_after_retention_only() {
    let hub = EventHub::new(EventHubConfig {
        retention: Duration::from_secs(600),
        ..EventHubConfig::default()
    });
    let (finished, running) = (JobId::new(), JobId::new());
    hub.open(finished).append(done()).expect("open");
    hub.open(running).append(JobEvent::Started).expect("open");
    assert!(Arc::ptr_eq(
        &hub.open(finished),
        &hub.get(finished).expect("held")
    ));

    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(hub.purge_expired(), 0, "closed log kept within retention");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(hub.purge_expired(), 1);
    assert!(
        hub.get(finished).is_none(),
        "closed log removed after retention"
    );
    assert!(hub.get(running).is_some(), "open logs are never purged");
}

#[tokio::test(start_paused = true)]
async fn purger_task_runs_periodically_and_stops_with_the_hub() {
    let hub = Arc::new(EventHub::new(EventHubConfig {
        retention: Duration::from_secs(60),
        ..EventHubConfig::default()
    }));
    let job = JobId::new();
    hub.open(job).append(done()).expect("open");
    let purger = tokio::spawn(EventHub::run_purger(
        Arc::downgrade(&hub),
        Duration::from_secs(30),
    ));

    tokio::time::sleep(Duration::from_secs(95)).await;
    assert!(hub.get(job).is_none(), "the purger removed the expired log");

    drop(hub);
    tokio::time::timeout(Duration::from_secs(120), purger)
        .await
        .expect("purger ends once the hub is gone")
        .expect("purger task");
}

#[tokio::test]
async fn a_resumed_log_numbers_above_the_earlier_run_and_reports_the_rest_missing() {
    let hub = EventHub::new(EventHubConfig::default());
    let id = JobId::new();
    let log = hub.open_resumed(id, 3);
    let base = 3u64 << 32;
    assert_eq!(log.last_sequence(), base);
    assert!(
        Arc::ptr_eq(&log, &hub.open(id)),
        "the manager's open finds the resumed log"
    );
    // Resuming with a number the earlier run gave out: everything up to the base is missing.
    let mut old = log.watch(WatchFrom::After(41), false).expect("admitted");
    // A fresh watcher and one at the base miss nothing.
    let mut fresh = log.watch(WatchFrom::Oldest, false).expect("admitted");
    let mut at_base = log.watch(WatchFrom::After(base), false).expect("admitted");
    // Nothing of this run was numbered yet.
    assert!(matches!(
        log.watch(WatchFrom::After(base + 1), false),
        Err(EventLogError::AheadOfLog { .. })
    ));
    assert_eq!(log.append(JobEvent::Started).expect("open"), Some(base + 1));
    log.append(done()).expect("open");

    let lagged = old
        .next()
        .await
        .expect("an item")
        .expect_err("the gap comes first");
    assert_eq!((lagged.first_missing(), lagged.last_missing()), (42, base));
    assert_eq!(drain_sequences(&mut old).await, vec![base + 1, base + 2]);
    assert_eq!(drain_sequences(&mut fresh).await, vec![base + 1, base + 2]);
    assert_eq!(
        drain_sequences(&mut at_base).await,
        vec![base + 1, base + 2]
    );

    // A job created in this run starts at 1 as always.
    let new = hub.open(JobId::new());
    assert_eq!(new.append(JobEvent::Started).expect("open"), Some(1));
}
