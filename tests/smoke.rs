mod common;
use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let relay = relay().await;
    let a = client(&relay, "alice").await;
    let b = client(&relay, "bob").await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    b.on_any("hello", move |m| g.lock().unwrap().push((m.from, m.args)));
    b.on_any("ask", |m| {
        let n: i64 = m.arg(0).unwrap();
        m.reply.unwrap().send((n + 1,));
    });
    a.emit_to("bob", "hello", ("hi", 1)).await.unwrap();
    let r = a.emit_to_with_reply("bob", "ask", (41,)).await.unwrap();
    assert_eq!(r, vec![json!(42)]);
    eventually("hello arrives", || got.lock().unwrap().len() == 1).await;
    assert_eq!(got.lock().unwrap()[0], ("alice".to_string(), vec![json!("hi"), json!(1)]));
    let mut ids = a.list_clients().await.unwrap();
    ids.sort();
    assert_eq!(ids, vec!["alice", "bob"]);
    a.add_p2p_target("bob").await.unwrap();
    assert!(a.add_p2p_target("nobody").await.is_err());
}
