//! RFC 3161 time-stamping of an Authenticode signature, as signtool `/tr … /td sha256` embeds it
//! (driver-image-and-signing.md §3.5): the message imprint is SHA-256 over the SignerInfo's signature value, and the
//! returned TimeStampToken (a CMS SignedData over TSTInfo) becomes the unsigned attribute 1.3.6.1.4.1.311.3.3.1.
//!
//! Transport is HTTP/1.1 POST `application/timestamp-query` over plain TCP. Public TSAs publish http:// endpoints:
//! the token is signed by the TSA, so TLS adds no integrity, and leaving it out keeps a TLS stack out of the
//! signer. https:// URLs are refused with that explanation.

use crate::error::SigningError;
use crate::spc::{ID_CT_TST_INFO, ID_SHA256};
use cmpv2::status::PkiStatus;
use der::asn1::{Any, Int, OctetString};
use der::{Decode, Encode};
use rsa::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifier;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

/// How long to wait for the TSA to connect, answer or send more bytes.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A token is a few KiB; anything far larger is not a timestamp response.
const MAX_RESPONSE: usize = 1 << 20;

/// The message imprint of an Authenticode signature value.
pub fn message_imprint(signature: &[u8]) -> MessageImprint {
    MessageImprint {
        hash_algorithm: AlgorithmIdentifier { oid: ID_SHA256, parameters: Some(Any::null()) },
        hashed_message: OctetString::new(Sha256::digest(signature).to_vec()).expect("32 bytes fit an OCTET STRING"),
    }
}

/// Asks the TSA at `url` for a token over `signature`; returns the DER TimeStampToken (a ContentInfo) after
/// checking its status, its imprint and its nonce.
pub fn request_timestamp(url: &str, signature: &[u8]) -> Result<Vec<u8>, SigningError> {
    let fail = |message: String| SigningError::Timestamp { url: url.to_string(), message };
    let mut nonce = [0u8; 8];
    OsRng.fill_bytes(&mut nonce);
    nonce[0] = (nonce[0] & 0x7f) | 0x01; // positive and minimal: a leading zero byte would change the encoding
    let request = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: message_imprint(signature),
        req_policy: None,
        nonce: Some(Int::new(&nonce)?),
        cert_req: true,
        extensions: None,
    };
    let body = http_post(url, "application/timestamp-query", &request.to_der()?).map_err(fail)?;
    let response = TimeStampResp::from_der(&body).map_err(|e| fail(format!("response is not a TimeStampResp: {e}")))?;
    if !matches!(response.status.status, PkiStatus::Accepted | PkiStatus::GrantedWithMods) {
        return Err(fail(format!(
            "request refused: status {:?}{}",
            response.status.status,
            response.status.fail_info.map(|f| format!(", failInfo {f:?}")).unwrap_or_default()
        )));
    }
    let token = response.time_stamp_token.ok_or_else(|| fail("granted response carries no token".into()))?;
    let tst_info = token_tst_info(&token.to_der()?).map_err(|e| fail(e.to_string()))?;
    if tst_info.message_imprint != request.message_imprint {
        return Err(fail("token's message imprint is not the hash of our signature".into()));
    }
    if tst_info.nonce.as_ref().map(|n| n.as_bytes()) != Some(&nonce[..]) {
        return Err(fail("token's nonce does not match the request (replayed or foreign response)".into()));
    }
    Ok(token.to_der()?)
}

/// Decodes the TSTInfo inside a DER TimeStampToken.
pub fn token_tst_info(token_der: &[u8]) -> Result<TstInfo, SigningError> {
    let token = cms::content_info::ContentInfo::from_der(token_der)?;
    let signed_data: cms::signed_data::SignedData = token.content.decode_as()?;
    let content = &signed_data.encap_content_info;
    if content.econtent_type != ID_CT_TST_INFO {
        return Err(SigningError::Encoding(format!(
            "timestamp token content type is {}, not id-ct-TSTInfo",
            content.econtent_type
        )));
    }
    let econtent =
        content.econtent.as_ref().ok_or_else(|| SigningError::Encoding("timestamp token has no TSTInfo".into()))?;
    let octets = OctetString::from_der(&econtent.to_der()?)?;
    Ok(TstInfo::from_der(octets.as_bytes())?)
}

/// Minimal HTTP/1.1 POST with `Connection: close`; accepts Content-Length, chunked, or read-to-EOF bodies.
fn http_post(url: &str, content_type: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let rest = match url.strip_prefix("http://") {
        Some(rest) => rest,
        None if url.starts_with("https://") => {
            return Err("https:// is not supported; use the TSA's http:// endpoint (RFC 3161 tokens are signed by \
                        the TSA, so TLS adds no integrity)"
                .into())
        }
        None => return Err("URL must start with http://".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let address = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| format!("cannot connect to {address}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\nAccept: \
         application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: bpf2sys\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body)).map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE as u64 + 1).read_to_end(&mut response).map_err(|e| format!("receive: {e}"))?;
    if response.len() > MAX_RESPONSE {
        return Err(format!("response larger than {MAX_RESPONSE} bytes"));
    }
    parse_http_response(&response)
}

fn parse_http_response(response: &[u8]) -> Result<Vec<u8>, String> {
    let header_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "malformed HTTP response: no end of headers".to_string())?;
    let head = String::from_utf8_lossy(&response[..header_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("HTTP status line {status_line:?}"));
    }
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.parse::<usize>().map_err(|_| format!("bad Content-Length {value:?}"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let body = &response[header_end + 4..];
    if chunked {
        return decode_chunked(body);
    }
    match content_length {
        Some(n) if body.len() < n => Err(format!("response body truncated: {} of {n} bytes", body.len())),
        Some(n) => Ok(body[..n].to_vec()),
        None => Ok(body.to_vec()),
    }
}

fn decode_chunked(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or("chunked body: missing chunk size line")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim().to_string();
        let size =
            usize::from_str_radix(&size_text, 16).map_err(|_| format!("chunked body: bad size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("chunked body truncated".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_with_content_length_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_http_response(plain).unwrap(), b"abc");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked).unwrap(), b"abc");
        assert!(parse_http_response(b"HTTP/1.1 500 Oops\r\n\r\n").unwrap_err().contains("500"));
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(parse_http_response(b"garbage").is_err());
    }

    #[test]
    fn https_urls_are_refused_with_a_reason() {
        let e = http_post("https://tsa.example/", "x", b"").unwrap_err();
        assert!(e.contains("http://"), "{e}");
    }
}
