# Offline evaluation: the metrics exporter on a non-loopback address with the firewall open.
# expect: firewall: tcp=[1935, 9500]
# expect: ListenStream=0.0.0.0:9500
# expect: NEUSTREAM_METRICS_STREAM_LABEL=key
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    openFirewall = true;
    metrics = {
      enable = true;
      listenAddress = "0.0.0.0";
      port = 9500;
      openFirewall = true;
      streamLabel = "key";
    };
  };
}
