//! A device's report exchange with the server: `Idle`, then an answer to each command the
//! server hands out, until it answers with an empty body (nothing queued). The fleet runs one
//! after each push; the `demo` one after every push and after enrollment.

use http::StatusCode;

use super::conn::REPORT_TYPE;
use super::device::SimDevice;
use super::nodes::{NodeConns, FIRST_REPORT};
use super::signer::DeviceSigner;
use super::xml::{self, CommandRef};

/// Runs device `index`'s exchange: Idle, then `answer(command)` for each command handed out,
/// at most `max_commands`. Each request goes to the node the routes choose for it (requests
/// [`FIRST_REPORT`]..). Returns the commands answered, in order (empty: nothing was queued).
pub(crate) async fn exchange(
    conn: &mut NodeConns,
    index: usize,
    d: &SimDevice,
    signer: Option<&DeviceSigner>,
    max_commands: usize,
    mut answer: impl FnMut(&CommandRef) -> Vec<u8>,
) -> Result<Vec<CommandRef>, String> {
    let mut answered = Vec::new();
    let mut body = d.idle();
    for round in 0..=max_commands {
        let signature = signer.map(|s| s.sign(&body));
        let request = FIRST_REPORT + round as u32;
        let (status, reply) = conn
            .put(index, request, "/mdm/server", REPORT_TYPE, body, signature)
            .await
            .map_err(|e| e.to_string())?;
        if status != StatusCode::OK {
            return Err(format!(
                "report answered {status}: {}",
                String::from_utf8_lossy(&reply).trim()
            ));
        }
        match xml::command_of(&reply)? {
            Some(command) => {
                body = answer(&command);
                answered.push(command);
            }
            None => return Ok(answered),
        }
    }
    Err(format!("the server kept sending commands ({max_commands})"))
}
