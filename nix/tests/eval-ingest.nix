# Must evaluate cleanly: RTMPS beside RTMP with the operator's certificate (ACME's files, by
# name), SRT on another port, the firewall opened for all three, and the same publish/read
# permissions as the shipped mediamtx.yml (readers only from loopback).
# expect: rtmpEncryption: optional
# expect: rtmpsAddress: :443
# expect: rtmpServerKey: /var/lib/acme/ingest.example.net/key.pem
# expect: rtmpServerCert: /var/lib/acme/ingest.example.net/fullchain.pem
# expect: srtAddress: :9000
# expect: AmbientCapabilities=CAP_NET_BIND_SERVICE
# expect: action: publish
# expect: firewall: tcp=[443, 1935] udp=[9000]
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    openFirewall = true;
    srt.port = 9000;
    rtmps = {
      enable = true;
      port = 443;
      certificate = "/var/lib/acme/ingest.example.net/fullchain.pem";
      key = "/var/lib/acme/ingest.example.net/key.pem";
    };
  };
}
