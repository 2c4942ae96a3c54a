# Offline evaluation: opening the firewall for a metrics socket on loopback is refused.
# expect: services.neustream.metrics.openFirewall is set but services.neustream.metrics.listenAddress is the loopback address 127.0.0.1
{ ... }:
{
  services.neustream = {
    enable = true;
    controlPlaneUrl = "https://api.neustream.app";
    metrics = {
      enable = true;
      openFirewall = true;
    };
  };
}
