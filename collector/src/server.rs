//! The HTTP server loop: hyper's HTTP/1 connections with a header-read timeout and a cap on
//! connections open at once.
//!
//! `axum::serve` gives hyper no timer, so hyper's header-read timeout never runs and a client
//! that sends a header byte now and then holds its connection forever; here every connection
//! gets one. The timeout runs from when the server starts waiting for a request's head (also
//! between requests on a kept-alive connection) until the head is complete, so a slow sender
//! and an idle connection are both cut after it. At the cap, the loop stops accepting: further
//! clients wait in the kernel's backlog until a connection ends.

use crate::config::Limits;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::Semaphore};

/// Largest request head (request line and headers) read, bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.http_max_connections));
    let header_timeout = limits.http_header_timeout;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    log::warn!("http: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                log::debug!("http: connection: {e}");
            }
        });
    }
}
