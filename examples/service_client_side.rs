//! Services provided by a client: the job service runs on a client of the relay.
//!
//! - A client connects as the service `job-service` (its client id is the service name) and
//!   provides the API `create-job` and the topic `job-updates`, where it publishes each job's
//!   progress.
//! - A device client calls `create-job` and is told by the service (`emit_client`) when its job is
//!   done.
//! - A web client watches the `job-updates` topic, and is told when the topic goes away.
//!
//! The device and web clients' code is the same as in `examples/service_server_side.rs`, where
//! the server provides the service: callers cannot tell the difference.
//!
//! Run with `cargo run --example service_client_side`.

use serde::{Deserialize, Serialize};
use serde_json::json;
use socketio_p2p::{ClientOptions, Error, P2pClient, Relay, Result, ServiceClient, TopicEvent};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The next value a listener passed on, waiting at most 5 s.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> Result<T> {
    let after = Duration::from_secs(5);
    match timeout(after, rx.recv()).await {
        Ok(Some(v)) => Ok(v),
        _ => Err(Error::Timeout {
            peer: None,
            event: what.to_string(),
            after,
        }),
    }
}

/// What `create-job` answers.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    id: u64,
    name: String,
}

/// The job service: accepts jobs and runs each as a task that reports its progress.
async fn provide_jobs(jobs: &ServiceClient) -> Result<()> {
    jobs.create_topic("job-updates").await?;
    let next_id = Arc::new(AtomicU64::new(1));
    let service = jobs.clone();
    jobs.provide_service("create-job", move |call| {
        let name: String = call.arg(0).unwrap_or_else(|_| "unnamed".into());
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        println!("[job-service] '{}' asks for job #{id} '{name}'", call.from);
        call.respond(Job {
            id,
            name: name.clone(),
        });
        let (service, device) = (service.clone(), call.from.clone());
        tokio::spawn(async move {
            for status in ["queued", "running", "done"] {
                tokio::time::sleep(Duration::from_millis(50)).await;
                println!("[job-service] job #{id}: {status}");
                let update = json!({ "id": id, "name": name, "status": status });
                if let Err(e) = service.publish_topic("job-updates", &update).await {
                    println!("[job-service] could not publish: {e}");
                }
            }
            if let Err(e) = service.emit_client(&device, "job-finished", id).await {
                println!("[job-service] could not tell '{device}': {e}");
            }
        });
    })?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let relay = Relay::bind("127.0.0.1:0").await?;
    println!("relay listening on {}", relay.url());
    let jobs =
        P2pClient::connect_service(&relay.url(), "job-service", ClientOptions::default()).await?;
    provide_jobs(&jobs).await?;
    println!(
        "[job-service] connected as a service: APIs {:?}, topics {:?}",
        jobs.apis(),
        jobs.topics()
    );
    // The name is taken: a second client cannot claim it.
    match P2pClient::connect_service(&relay.url(), "job-service", ClientOptions::default()).await {
        Ok(_) => println!("[impostor] unexpectedly connected as 'job-service'"),
        Err(e) => println!("[impostor] refused: {e}"),
    }

    // The web client watches the job updates.
    let web = P2pClient::connect(&relay.url(), "web").await?;
    let (update_tx, mut update_rx) = mpsc::unbounded_channel();
    web.subscribe_topic("job-service", "job-updates", move |event| match event {
        TopicEvent::Published(args) => {
            println!("[web] job update: {}", args[0]);
            let _ = update_tx.send(Some(args[0]["status"].as_str().unwrap_or("").to_string()));
        }
        TopicEvent::Destroyed => {
            println!("[web] the topic 'job-updates' was destroyed");
            let _ = update_tx.send(None);
        }
    })
    .await?;
    println!("[web] subscribed to 'job-updates' of 'job-service'");

    // The device client creates a job and waits to hear from the service that it is done.
    let device = P2pClient::connect(&relay.url(), "device").await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    device.on_service("job-service", "job-finished", move |msg| {
        let id: u64 = msg.arg(0).unwrap_or_default();
        println!("[device] '{}' says job #{id} is finished", msg.from);
        let _ = done_tx.send(id);
    });
    let job: Job = device
        .request_service("job-service", "create-job", "print label")
        .await?;
    println!("[device] job created: #{} '{}'", job.id, job.name);
    let finished = next(&mut done_rx, "job-finished").await?;
    assert_eq!(finished, job.id);

    // An API the service does not provide is an error answer, not a wait.
    match device
        .request_service::<()>("job-service", "cancel-job", job.id)
        .timeout(Duration::from_secs(1))
        .await
    {
        Ok(()) => println!("[device] unexpected answer"),
        Err(e) => println!("[device] cancel-job: {e}"),
    }

    // The web client saw every status; then the service ends the topic.
    let mut statuses = Vec::new();
    while statuses.len() < 3 {
        match next(&mut update_rx, "job update").await? {
            Some(status) => statuses.push(status),
            None => println!("[web] the topic went away early"),
        }
    }
    println!("[web] saw {statuses:?}");
    jobs.destroy_topic("job-updates").await?;
    let last = next(&mut update_rx, "topic destroyed").await?;
    assert_eq!(last, None, "the web client is told the topic is gone");
    match jobs.publish_topic("job-updates", "late").await {
        Ok(()) => println!("[job-service] unexpectedly published to a destroyed topic"),
        Err(e) => println!("[job-service] publishing after destroy_topic: {e}"),
    }

    web.disconnect().await?;
    device.disconnect().await?;
    jobs.disconnect().await?;
    relay.shutdown().await;
    println!("done");
    Ok(())
}
