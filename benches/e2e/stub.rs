//! A null agent for the capacity levels beyond what one kernel's PTYs allow: it enrolls and
//! links like `cmdop agent` (same gRPC protocol, `proto/relay.proto`), answers every `Open`
//! with `Opened` and a two-byte prompt, echoes input and grants credit back, but runs no
//! process. Each link session then costs the SERVER exactly what a real one costs (socket,
//! link session, channel, credit, replay ring), while the agent side costs nothing; the
//! measured echo session still goes through the real agent.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use cmdop::proto::{self, agent_frame, relay_client::RelayClient, relay_frame};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A running null agent; dropping it ends its stream.
pub struct Stub {
    pub machine_id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    Ok(endpoint.connect().await?)
}

/// Enrolls with `token` and keeps a stream open (on the current runtime).
pub async fn start(url: &str, token: &str) -> anyhow::Result<Stub> {
    let mut client = RelayClient::new(channel(url).await?);
    let enrolled = client
        .enroll(proto::EnrollRequest {
            token: token.to_string(),
            hostname: "bench-stub".into(),
            display_name: "bench-stub".into(),
        })
        .await
        .context("stub enrollment refused")?
        .into_inner();
    let (out, rx) = mpsc::channel::<proto::AgentFrame>(1024);
    let hello = proto::Hello {
        hostname: "bench-stub".into(),
        os: "linux".into(),
        arch: std::env::consts::ARCH.into(),
        agent_version: "bench".into(),
        display_name: "bench-stub".into(),
    };
    out.send(proto::AgentFrame { kind: Some(agent_frame::Kind::Hello(hello)) }).await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert("authorization", format!("Bearer {}", enrolled.credential).parse()?);
    let mut inbound = client.link(request).await.context("stub link refused")?.into_inner();
    let task = tokio::spawn(async move {
        // channel -> (next output offset, output credit left)
        let mut channels: HashMap<u64, (u64, u64)> = HashMap::new();
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            let frame = tokio::select! {
                f = inbound.message() => f,
                _ = beat.tick() => {
                    let hb = proto::Heartbeat { unix_ms: 0 };
                    if out.send(proto::AgentFrame { kind: Some(agent_frame::Kind::Heartbeat(hb)) }).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Ok(Some(proto::RelayFrame { kind: Some(kind) })) = frame else {
                return;
            };
            let mut replies = Vec::new();
            match kind {
                relay_frame::Kind::Open(open) => {
                    let opened = proto::Opened {
                        channel: open.channel,
                        input_window: 64 * 1024,
                        pid: 1,
                        created: true,
                        ..Default::default()
                    };
                    replies.push(agent_frame::Kind::Opened(opened));
                    let prompt = Bytes::from_static(b"$ ");
                    let credit = u64::from(open.output_window).saturating_sub(prompt.len() as u64);
                    replies.push(agent_frame::Kind::Output(proto::Output {
                        channel: open.channel,
                        offset: 0,
                        data: prompt,
                        ..Default::default()
                    }));
                    channels.insert(open.channel, (2, credit));
                }
                relay_frame::Kind::Input(input) => {
                    let n = u32::try_from(input.data.len()).unwrap_or(u32::MAX);
                    if let Some((offset, credit)) = channels.get_mut(&input.channel)
                        && *credit >= u64::from(n)
                    {
                        replies.push(agent_frame::Kind::Output(proto::Output {
                            channel: input.channel,
                            offset: *offset,
                            data: input.data,
                            ..Default::default()
                        }));
                        *offset += u64::from(n);
                        *credit -= u64::from(n);
                    }
                    replies.push(agent_frame::Kind::Credit(proto::Credit { channel: input.channel, bytes: n }));
                }
                relay_frame::Kind::Credit(c) => {
                    if let Some((_, credit)) = channels.get_mut(&c.channel) {
                        *credit += u64::from(c.bytes);
                    }
                }
                relay_frame::Kind::Close(c) if channels.remove(&c.channel).is_some() => {
                    let closed = proto::Closed {
                        channel: c.channel,
                        end: Some(proto::closed::End::ExitCode(0)),
                        ..Default::default()
                    };
                    replies.push(agent_frame::Kind::Closed(closed));
                }
                _ => {}
            }
            for kind in replies {
                if out.send(proto::AgentFrame { kind: Some(kind) }).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Stub { machine_id: enrolled.machine_id, task })
}
