# NixOS module: services.neustream.
#
# Composes with nixpkgs' services.mediamtx, never a second MediaMTX unit: it enables MediaMTX,
# adds the live/<key> path with the Neustream hooks to its settings, and gives mediamtx.service
# the user, runtime directory, environment and sandbox the hooks need. The relay template unit
# and the slice come from the package (the files in systemd/, installed by nix/package.nix);
# the module's relay options become a drop-in, so there is no second copy of the unit.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.neustream;
  mtx = config.services.mediamtx;
  inherit (lib) mkOption types;

  # ---- The relay unit as shipped: the relay options' defaults and the runtime directory are
  # read from it, so the module cannot drift from systemd/neustream-relay@.service.
  relayUnitLines = lib.splitString "\n" (builtins.readFile (../systemd + "/neustream-relay@.service"));
  relayUnitValue =
    key:
    let
      values = lib.concatMap (
        line:
        let
          m = builtins.match "${key}=(.*)" line;
        in
        if m == null then [ ] else m
      ) relayUnitLines;
    in
    if values == [ ] then
      throw "nix/module.nix: systemd/neustream-relay@.service has no ${key}= line"
    else
      lib.last values;

  # EnvironmentFile=-/run/neustream/streams/%I.env -> /run/neustream/streams
  runtimeDir = dirOf (lib.removePrefix "-" (relayUnitValue "EnvironmentFile"));

  # Non-secret settings: read by every hook (and an operator's `neustream ready`) from the
  # CLI's default settings file, so changing them restarts nothing.
  configPath = "/etc/neustream/neustream.env";

  # Settings the relay reads (from its unit's environment, not from the settings file).
  relayVariables = [
    "NEUSTREAM_LOG_LEVEL"
    "NEUSTREAM_STOP_TIMEOUT"
    "NEUSTREAM_TLS_VERIFY"
    "NEUSTREAM_CA_FILE"
    "NEUSTREAM_RTMP_ENGINE"
    "NEUSTREAM_PLATFORM_CODECS"
  ];

  # The user nixpkgs' mediamtx module runs MediaMTX (and so the hooks) as.
  mtxUser = config.systemd.services.mediamtx.serviceConfig.User or "mediamtx";
  # A drop-in on a package unit that runs as the hooks: their user (it owns the records and
  # locks; the polkit rule names it) and the module's secrets.
  asHooksUser = {
    overrideStrategy = "asDropin";
    serviceConfig = {
      User = mtxUser;
      EnvironmentFile = lib.mkIf (cfg.environmentFile != null) [ environmentFileString ];
    };
  };

  # The same path as the shipped mediamtx.yml: stream keys are [A-Za-z0-9_-]+.
  livePath = "~^live/[A-Za-z0-9_-]+$";

  # MediaMTX 1.19.3 renamed runOnReady/runOnNotReady to runOnAvailable/runOnUnavailable (the old
  # names still work there, with a deprecation warning).
  mtxVersion = mtx.package.version or "0";
  hooks =
    if lib.versionAtLeast mtxVersion "1.19.3" then
      {
        ready = "runOnAvailable";
        gone = "runOnUnavailable";
      }
    else
      {
        ready = "runOnReady";
        gone = "runOnNotReady";
      };

  neustreamExe = lib.getExe' cfg.package "neustream";

  # ---- Rendering of `settings` as an env file that both dotenvy (the CLI) and systemd's
  # EnvironmentFile= read the same way: bare when safe, otherwise single-quoted (literal in both).
  valueString = v: if builtins.isBool v then lib.boolToString v else toString v;
  isBare = s: builtins.match "[A-Za-z0-9_./:@%+,=-]*" s != null;
  renderValue =
    v:
    let
      s = valueString v;
    in
    if isBare s then s else "'${s}'";
  settingsFormat = pkgs.formats.keyValue { mkKeyValue = k: v: "${k}=${renderValue v}"; };
  effectiveSettings = lib.filterAttrs (_: v: v != null) cfg.settings;
  envFile = settingsFormat.generate "neustream.env" effectiveSettings;

  badNames = builtins.filter (n: builtins.match "[A-Za-z_][A-Za-z0-9_]*" n == null) (
    builtins.attrNames effectiveSettings
  );
  badValues = builtins.attrNames (
    lib.filterAttrs (
      _: v:
      let
        s = valueString v;
      in
      lib.hasInfix "'" s || lib.hasInfix "\n" s
    ) effectiveSettings
  );

  # ---- URL helpers (scheme://host[:port][/...]).
  urlParts =
    url:
    let
      m = builtins.match "([a-z]+)://([[][0-9A-Fa-f:.]*[]]|[^/:?#]*)(:([0-9]+))?([/?#].*)?" url;
    in
    if m == null then
      null
    else
      {
        scheme = builtins.elemAt m 0;
        host = builtins.elemAt m 1;
        port = builtins.elemAt m 3;
      };
  isLoopback =
    host:
    lib.toLower host == "localhost" || host == "[::1]" || builtins.match "127\\.[0-9.]+" host != null;

  cpUrl = cfg.settings.CONTROL_PLANE_URL;
  cpParts = if cpUrl == null then null else urlParts cpUrl;
  insecureControlPlane =
    cpParts != null && cpParts.scheme == "http" && !(isLoopback cpParts.host);

  portString = toString cfg.rtmpPort;
  ingestParts = urlParts cfg.settings.NEUSTREAM_INGEST_URL;
  ingestPort =
    if ingestParts == null then
      null
    else if ingestParts.port != null then
      ingestParts.port
    else
      "1935";
  mtxRtmpAddress = toString (mtx.settings.rtmpAddress or ":${portString}");

  # http://host:port of MediaMTX's Control API, from its apiAddress (":9997", "0.0.0.0:9997" and
  # "[::]:9997" listen on every address, loopback included).
  apiAddress = toString (mtx.settings.apiAddress or "127.0.0.1:9997");
  apiUrl =
    if lib.hasPrefix ":" apiAddress then
      "http://127.0.0.1${apiAddress}"
    else if lib.hasPrefix "0.0.0.0:" apiAddress then
      "http://127.0.0.1:${lib.removePrefix "0.0.0.0:" apiAddress}"
    else if lib.hasPrefix "[::]:" apiAddress then
      "http://[::1]:${lib.removePrefix "[::]:" apiAddress}"
    else
      "http://${apiAddress}";

  rtmpsKeyString = toString cfg.rtmps.key; # never "${...}": that would copy a secret to the store
  privilegedPort =
    cfg.rtmpPort < 1024
    || (cfg.rtmps.enable && cfg.rtmps.port < 1024)
    || (cfg.srt.enable && cfg.srt.port < 1024);

  environmentFileString = toString cfg.environmentFile; # never "${...}": that would copy a path
  streamsFileString = toString cfg.streamsFile;

  # The session records' directory (NEUSTREAM_STATE_DIR's default).
  stateDir = "/var/lib/neustream";
  reconcileStopped = "${neustreamExe} reconcile --mediamtx-stopped --timeout 5s";
in
{
  options.services.neustream = {
    enable = lib.mkEnableOption "Neustream: MediaMTX ingest with Control Plane authentication and per-stream RTMP relays";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The neustream package: the hook and relay binary, the relay template unit and the slice.";
    };

    controlPlaneUrl = mkOption {
      type = types.nullOr (types.strMatching "https?://.+");
      default = null;
      example = "https://api.neustream.app";
      description = ''
        Base URL of the Neustream Control Plane (`CONTROL_PLANE_URL`), which authenticates stream
        keys and gives their destinations. Set this or
        {option}`services.neustream.streamsFile`, not both. `http://` is accepted only for a
        loopback host unless
        {option}`services.neustream.settings.NEUSTREAM_ALLOW_INSECURE_CONTROL_PLANE` is set.
      '';
    };

    streamsFile = mkOption {
      type = types.nullOr (types.either types.path types.str);
      default = null;
      example = "/var/lib/secrets/neustream-streams.toml";
      description = ''
        Standalone mode, without the Control Plane: the TOML file of stream keys and their
        destinations (`NEUSTREAM_STREAMS_FILE`; format in the README), read by the hooks at
        every publish, so edits need no rebuild. It holds stream keys: give its name as a string
        naming a file outside the Nix store (the module refuses a store path or a Nix path value,
        which would be copied into the world-readable store), owned by root, group `mediamtx`,
        mode 0640; the hooks refuse a file other users can read. Not under /home (MediaMTX runs
        with ProtectHome). Check it with `neustream streams check FILE`.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/neustream.env";
      description = ''
        File with secret settings in `KEY=value` lines, e.g. `CONTROL_PLANE_TOKEN=...`, loaded
        into mediamtx.service's environment (and so the hooks'); it overrides
        {option}`services.neustream.settings`. Give it as a string naming a file outside the Nix
        store (written by agenix, sops-nix or by hand): a Nix path value would be copied into the
        world-readable store, and the module refuses it.
      '';
    };

    rtmpPort = mkOption {
      type = types.port;
      default = 1935;
      description = ''
        TCP port MediaMTX accepts RTMP publishers on. Sets MediaMTX's `rtmpAddress` and the
        relays' source (`NEUSTREAM_INGEST_URL`). A port below 1024 gives mediamtx.service
        `CAP_NET_BIND_SERVICE`.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to open the ingest ports in the firewall: {option}`services.neustream.rtmpPort`
        (TCP), {option}`services.neustream.rtmps.port` (TCP) when RTMPS is on and
        {option}`services.neustream.srt.port` (UDP) when SRT is on.
      '';
    };

    srt = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether MediaMTX accepts SRT publishers (OBS's SRT output, BELABOX, Moblin, Larix...)
          at `srt://<host>:<port>?streamid=publish:live/<key>`, through the same hooks, key
          check and kick as RTMP.
        '';
      };
      port = mkOption {
        type = types.port;
        default = 8890;
        description = "UDP port of MediaMTX's SRT listener (`srtAddress`).";
      };
    };

    rtmps = {
      enable = lib.mkEnableOption ''
        RTMPS publishing beside plain RTMP (MediaMTX `rtmpEncryption: optional`) at
        `rtmps://<host>:<port>/live/<key>`, with {option}`services.neustream.rtmps.certificate`
        and {option}`services.neustream.rtmps.key`'';
      port = mkOption {
        type = types.port;
        default = 1936;
        description = "TCP port of MediaMTX's RTMPS listener (`rtmpsAddress`).";
      };
      certificate = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/acme/ingest.example.net/fullchain.pem";
        description = "The RTMPS certificate with its chain, PEM (`rtmpServerCert`). MediaMTX re-reads it when it changes.";
      };
      key = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/acme/ingest.example.net/key.pem";
        description = ''
          The certificate's private key, PEM (`rtmpServerKey`), readable by the `mediamtx` user
          (e.g. `security.acme.certs.<name>.group = "mediamtx"`). A string naming a file outside
          the Nix store: the module refuses a store path or a Nix path value.
        '';
      };
    };

    reconcile.interval = mkOption {
      type = types.str;
      default = "1min";
      example = "30s";
      description = ''
        How often neustream-reconcile.timer runs `neustream reconcile`, which sends every
        stream-end the Control Plane has not confirmed yet (it was down when the stream ended)
        and ends sessions whose publisher vanished without an unpublish hook: never while
        their relay runs, and only when MediaMTX's API shows no publisher or the MediaMTX
        service that carried the session (recorded by its hook) is gone. A systemd time span
        (`OnUnitActiveSec=`). MediaMTX's unit also runs it whenever MediaMTX stops, fails or
        starts.
      '';
    };

    relay = {
      cpuQuota = mkOption {
        type = types.strMatching "[0-9]+%";
        default = relayUnitValue "CPUQuota";
        example = "100%";
        description = ''
          `CPUQuota=` of each relay (one process copying one stream to all its destinations).
          All relays together are capped by neustream.slice; size that with
          `systemd.slices.neustream.sliceConfig.CPUQuota`.
        '';
      };

      memoryMax = mkOption {
        type = types.str;
        default = relayUnitValue "MemoryMax";
        example = "512M";
        description = "`MemoryMax=` of each relay (bytes with a K, M or G suffix, a percentage, or `infinity`).";
      };

      restartSec = mkOption {
        type = types.either types.ints.unsigned types.str;
        default = relayUnitValue "RestartSec";
        example = "500ms";
        description = "`RestartSec=`: how long systemd waits before restarting a failed relay (seconds, or a systemd time span).";
      };

      ffmpegPackage = lib.mkPackageOption pkgs "ffmpeg-headless" {
        extraDescription = "The relays run its `ffmpeg` (`NEUSTREAM_FFMPEG`); they only copy streams, so no encoder is needed.";
      };
    };

    metrics = {
      enable = lib.mkEnableOption ''
        the Prometheus metrics exporter: neustream-metrics.socket (started at boot) and
        neustream-metrics.service (started by the first scrape), serving `GET /metrics` with every
        relay's and destination's state, bytes, TCP counters and systemd's CPU and memory
        accounting (see the README's "Metrics")'';

      listenAddress = mkOption {
        type = types.str;
        default = "127.0.0.1";
        example = "0.0.0.0";
        description = ''
          Address the metrics socket listens on (an IPv4 address, or an IPv6 address without
          brackets). The default keeps it on loopback: a Prometheus on this host, or a tunnel.
        '';
      };

      port = mkOption {
        type = types.port;
        default = 9431;
        description = "TCP port of `GET /metrics`.";
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Whether to open {option}`services.neustream.metrics.port` in the firewall (for a Prometheus on another host; set {option}`services.neustream.metrics.listenAddress` too).";
      };

      streamLabel = mkOption {
        type = types.enum [
          "id"
          "key"
        ];
        default = "id";
        description = ''
          What the `stream` label holds: `id`, a 16-hex-digit digest of the ingest key (shown by
          `neustream status`), or `key`, the ingest key itself. Metric labels travel to every
          dashboard and long-term store; an ingest key lets its holder publish as the streamer.
        '';
      };
    };

    settings = mkOption {
      default = { };
      example = lib.literalExpression ''
        {
          NEUSTREAM_LOG_LEVEL = "debug";
          NEUSTREAM_AUTH_TIMEOUT = "3s";
          NEUSTREAM_STREAM_END_TIMEOUT = "60s";
        }
      '';
      description = ''
        Non-secret settings of the hooks and relays, as environment variables (see the README for
        the full list). Rendered to ${configPath}, the settings file every hook reads, so a
        change applies to the next hook without restarting MediaMTX; the relay's variables
        (${lib.concatStringsSep ", " relayVariables}) also go into the relay unit's environment
        and apply to the next relay start. `null` leaves a variable unset. Secrets (`CONTROL_PLANE_TOKEN`) belong in
        {option}`services.neustream.environmentFile`: the Nix store is world-readable.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          CONTROL_PLANE_URL = mkOption {
            type = types.nullOr (types.strMatching "https?://.+");
            default = cfg.controlPlaneUrl;
            defaultText = lib.literalExpression "config.services.neustream.controlPlaneUrl";
            description = "Base URL of the Control Plane; set {option}`services.neustream.controlPlaneUrl` instead.";
          };
          NEUSTREAM_STREAMS_FILE = mkOption {
            type = types.nullOr types.str;
            default = if cfg.streamsFile == null then null else streamsFileString;
            defaultText = lib.literalExpression "config.services.neustream.streamsFile";
            description = "The streams file of standalone mode; set {option}`services.neustream.streamsFile` instead.";
          };
          NEUSTREAM_ALLOW_INSECURE_CONTROL_PLANE = mkOption {
            type = types.bool;
            default = false;
            description = "Allow a plain `http://` Control Plane URL on a non-loopback host (tokens and stream keys then travel unencrypted).";
          };
          NEUSTREAM_INGEST_URL = mkOption {
            type = types.str;
            default = "rtmp://127.0.0.1:${portString}";
            defaultText = lib.literalExpression ''"rtmp://127.0.0.1:''${toString config.services.neustream.rtmpPort}"'';
            description = "Where a relay reads a stream from: `<this>/<MTX_PATH>` (MediaMTX's RTMP listener).";
          };
          NEUSTREAM_MEDIAMTX_API_URL = mkOption {
            type = types.str;
            default = apiUrl;
            defaultText = lib.literalExpression ''"http://" + config.services.mediamtx.settings.apiAddress'';
            description = "MediaMTX's Control API, used to kick publishers the Control Plane rejects.";
          };
          NEUSTREAM_LOG_LEVEL = mkOption {
            type = types.enum [
              "error"
              "warn"
              "info"
              "debug"
              "trace"
            ];
            default = "info";
            description = "Log level of the hooks and relays.";
          };
          NEUSTREAM_RTMP_ENGINE = mkOption {
            type = types.enum [
              "native"
              "ffmpeg"
            ];
            default = "native";
            description = ''
              The relays' RTMP client: `native` (the relay reads the ingest and publishes to
              every destination itself, one process per stream, H.264, HEVC, AV1, VP9, Opus...)
              or `ffmpeg` (one ffmpeg per destination, as relay v2 did; H.264/AAC only): the
              fallback for a platform that disagrees with the native client. Applies to the
              next relay start.
            '';
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [ {
    assertions = [
      {
        assertion = cpUrl != null || cfg.settings.NEUSTREAM_STREAMS_FILE != null;
        message = ''services.neustream.controlPlaneUrl is not set: set it to the Control Plane's base URL, e.g. "https://api.neustream.app", or set services.neustream.streamsFile = "/var/lib/secrets/neustream-streams.toml"; to run without the Control Plane.'';
      }
      {
        assertion = cpUrl == null || cfg.settings.NEUSTREAM_STREAMS_FILE == null;
        message = "services.neustream: both a Control Plane URL (${toString cpUrl}) and a streams file (${toString cfg.settings.NEUSTREAM_STREAMS_FILE}) are set, and the hooks would refuse to run: remove services.neustream.streamsFile to take keys from the Control Plane, or services.neustream.controlPlaneUrl to take them from the streams file.";
      }
      {
        assertion = !(builtins.isPath cfg.streamsFile);
        message = ''services.neustream.streamsFile is a Nix path value (${streamsFileString}), which would be copied into the world-readable Nix store with every stream key in it: give the file's name as a string, e.g. streamsFile = "/var/lib/secrets/neustream-streams.toml";'';
      }
      {
        assertion = cfg.streamsFile == null || (lib.hasPrefix "/" streamsFileString && !(lib.hasPrefix "${builtins.storeDir}/" streamsFileString));
        message = "services.neustream.streamsFile (${streamsFileString}) must be an absolute path outside the Nix store, which is world-readable: keep the file (stream keys) in e.g. /var/lib/secrets, root:mediamtx 0640.";
      }
      {
        assertion = cfg.controlPlaneUrl == null || cpUrl == cfg.controlPlaneUrl;
        message = "services.neustream.controlPlaneUrl (${toString cfg.controlPlaneUrl}) and services.neustream.settings.CONTROL_PLANE_URL (${toString cpUrl}) differ: set only controlPlaneUrl.";
      }
      {
        assertion = !insecureControlPlane || cfg.settings.NEUSTREAM_ALLOW_INSECURE_CONTROL_PLANE;
        message = "services.neustream: the Control Plane URL ${toString cpUrl} is plain http:// to a non-loopback host, so the hooks would refuse it: use https://, or set services.neustream.settings.NEUSTREAM_ALLOW_INSECURE_CONTROL_PLANE = true to accept an unencrypted Control Plane.";
      }
      {
        assertion = !(builtins.isPath cfg.environmentFile);
        message = ''services.neustream.environmentFile is a Nix path value (${environmentFileString}), which would be copied into the world-readable Nix store: give the file's name as a string, e.g. environmentFile = "/run/secrets/neustream.env";'';
      }
      {
        assertion = cfg.environmentFile == null || !(lib.hasPrefix "${builtins.storeDir}/" environmentFileString);
        message = "services.neustream.environmentFile (${environmentFileString}) is in the Nix store, which is world-readable: keep secrets in a file outside the store (agenix, sops-nix, or /run/secrets written at boot).";
      }
      {
        assertion = !(effectiveSettings ? CONTROL_PLANE_TOKEN);
        message = "services.neustream.settings.CONTROL_PLANE_TOKEN would be written to the world-readable Nix store: remove it and put CONTROL_PLANE_TOKEN=... into services.neustream.environmentFile.";
      }
      {
        assertion = badNames == [ ];
        message = "services.neustream.settings: ${lib.concatStringsSep ", " badNames} are not environment variable names (letters, digits and _, not starting with a digit).";
      }
      {
        assertion = badValues == [ ];
        message = "services.neustream.settings: the values of ${lib.concatStringsSep ", " badValues} contain a single quote or a newline, which the env file cannot carry.";
      }
      {
        assertion = lib.hasSuffix ":${portString}" mtxRtmpAddress;
        message = "services.neustream.rtmpPort is ${portString} but services.mediamtx.settings.rtmpAddress is \"${mtxRtmpAddress}\": set only services.neustream.rtmpPort.";
      }
      {
        assertion = ingestPort == portString;
        message = "services.neustream.settings.NEUSTREAM_INGEST_URL (${cfg.settings.NEUSTREAM_INGEST_URL}) must be an rtmp:// URL on services.neustream.rtmpPort (${portString}), where MediaMTX listens: the relays read the streams from it.";
      }
      {
        assertion = !cfg.rtmps.enable || (cfg.rtmps.certificate != null && cfg.rtmps.key != null);
        message = ''services.neustream.rtmps.enable is set, but MediaMTX cannot start RTMPS without a certificate: set services.neustream.rtmps.certificate and services.neustream.rtmps.key (e.g. "/var/lib/acme/<host>/fullchain.pem" and "/var/lib/acme/<host>/key.pem").'';
      }
      {
        assertion = !(builtins.isPath cfg.rtmps.key);
        message = ''services.neustream.rtmps.key is a Nix path value (${rtmpsKeyString}), which would copy the private key into the world-readable Nix store: give the file's name as a string, e.g. key = "/var/lib/acme/<host>/key.pem";'';
      }
      {
        assertion = cfg.rtmps.key == null || !(lib.hasPrefix "${builtins.storeDir}/" rtmpsKeyString);
        message = "services.neustream.rtmps.key (${rtmpsKeyString}) is in the Nix store, which is world-readable: keep the private key outside the store, readable by the mediamtx user.";
      }
      {
        assertion =
          !cfg.rtmps.enable
          || (cfg.rtmps.port != cfg.rtmpPort && !(cfg.metrics.enable && cfg.rtmps.port == cfg.metrics.port));
        message = "services.neustream.rtmps.port (${toString cfg.rtmps.port}) must differ from services.neustream.rtmpPort and the metrics port.";
      }
      {
        assertion = (mtx.settings.rtmp or true) != false;
        message = "services.mediamtx.settings.rtmp is false, but Neustream publishers and relays use RTMP: remove that setting.";
      }
      {
        assertion = (mtx.settings.api or true) != false;
        message = "services.mediamtx.settings.api is false, but the Neustream hooks use MediaMTX's Control API to drop rejected publishers: remove that setting.";
      }
      {
        assertion = !cfg.metrics.enable || cfg.metrics.port != cfg.rtmpPort;
        message = "services.neustream.metrics.port and services.neustream.rtmpPort are both ${portString}: give the metrics another port (default 9431).";
      }
      {
        assertion =
          !(cfg.metrics.enable && cfg.metrics.openFirewall)
          || !(lib.hasPrefix "127." cfg.metrics.listenAddress || cfg.metrics.listenAddress == "::1");
        message = "services.neustream.metrics.openFirewall is set but services.neustream.metrics.listenAddress is the loopback address ${cfg.metrics.listenAddress}: set listenAddress to an address other hosts reach (e.g. \"0.0.0.0\"), or leave the firewall closed.";
      }
      {
        assertion = (effectiveSettings.NEUSTREAM_RUNTIME_DIR or runtimeDir) == runtimeDir;
        message = "services.neustream.settings.NEUSTREAM_RUNTIME_DIR must be ${runtimeDir} (or unset): the relay unit reads its per-stream files from there.";
      }
      {
        assertion = (effectiveSettings.NEUSTREAM_STATE_DIR or stateDir) == stateDir;
        message = "services.neustream.settings.NEUSTREAM_STATE_DIR must be ${stateDir} (or unset): the module creates it for the MediaMTX user and lets mediamtx.service and neustream-reconcile.service write there.";
      }
    ];

    environment.systemPackages = [ cfg.package ];
    environment.etc."neustream/neustream.env".source = envFile;

    # ---- MediaMTX: nixpkgs' own service, extended.
    services.mediamtx = {
      enable = true;
      settings = {
        rtmp = lib.mkDefault true;
        rtmpAddress = lib.mkDefault ":${portString}";
        # RTMPS beside plain RTMP (the relays read plain RTMP on loopback: never "strict").
        rtmpEncryption = lib.mkDefault (if cfg.rtmps.enable then "optional" else "no");
        rtmpsAddress = lib.mkDefault ":${toString cfg.rtmps.port}";
        rtmpServerCert = lib.mkIf cfg.rtmps.enable (lib.mkDefault cfg.rtmps.certificate);
        rtmpServerKey = lib.mkIf cfg.rtmps.enable (lib.mkDefault rtmpsKeyString);
        srt = lib.mkDefault cfg.srt.enable;
        srtAddress = lib.mkDefault ":${toString cfg.srt.port}";
        # As the shipped mediamtx.yml: anyone may publish on live/<key> (the key is checked by
        # the hook, which kicks refused publishers); only this host reads streams (the relays)
        # and uses the Control API (the kick).
        authMethod = lib.mkDefault "internal";
        authInternalUsers = lib.mkDefault [
          {
            user = "any";
            pass = "";
            ips = [ ];
            permissions = [
              {
                action = "publish";
                path = livePath;
              }
            ];
          }
          {
            user = "any";
            pass = "";
            ips = [
              "127.0.0.1"
              "::1"
            ];
            permissions = [
              { action = "read"; }
              { action = "api"; }
            ];
          }
        ];
        # The hooks kick rejected publishers through the Control API: loopback only.
        api = lib.mkDefault true;
        apiAddress = lib.mkDefault "127.0.0.1:9997";
        paths.${livePath} = {
          ${hooks.ready} = "${neustreamExe} ready";
          ${hooks.gone} = "${neustreamExe} unpublish";
        };
      };
      env.NEUSTREAM_CONFIG = configPath;
    };

    # nixpkgs runs MediaMTX with DynamicUser=yes and User=mediamtx. A static user of that name
    # is used instead of a transient one: the polkit rule, the owner of the runtime directory
    # and the journal then name a stable identity.
    users.users.mediamtx = {
      isSystemUser = true;
      group = "mediamtx";
      description = "MediaMTX ingest and Neustream hooks";
    };
    users.groups.mediamtx = { };

    # Durable session records (no secrets), kept across reboots until the Control Plane
    # confirms each stream's end. tmpfiles, not StateDirectory=: nixpkgs runs MediaMTX with
    # DynamicUser=yes, which would put a StateDirectory under /var/lib/private, out of reach of
    # neustream-reconcile.service.
    systemd.tmpfiles.rules = [
      "d ${stateDir} 0700 ${mtxUser} ${mtxUser} -"
      "d ${stateDir}/sessions 0700 ${mtxUser} ${mtxUser} -"
    ];

    systemd.services.mediamtx = {
      # The hooks start and stop relays over the system bus (polkit decides); at shutdown
      # MediaMTX stops, and its ExecStopPost reports the ends, before D-Bus and polkit go.
      wants = [ "dbus.socket" ];
      after = [
        "dbus.socket"
        "dbus.service"
        "polkit.service"
      ];
      serviceConfig = lib.mkMerge [
        {
          # No publisher is live while MediaMTX is not running: before it starts (boot,
          # restart) and once it stopped or failed (kill -9, OOM), end the sessions it carried
          # whose relay no longer runs (a stop on purpose: all of them, relays stopped) and
          # report the ends; bounded, "-" so that it never blocks MediaMTX.
          ExecStartPre = [ "-${reconcileStopped}" ];
          ExecStopPost = [ "-${reconcileStopped}" ];
          ReadWritePaths = [ stateDir ];
          # Secrets for the hooks (CONTROL_PLANE_TOKEN); MediaMTX passes its environment on.
          EnvironmentFile = lib.mkIf (cfg.environmentFile != null) [ environmentFileString ];
          # The hooks write one <key>.env per stream here (secrets: destination stream keys);
          # systemd (root) reads them when it starts neustream-relay@<key>.service.
          RuntimeDirectory = [ (lib.removePrefix "/run/" runtimeDir) ];
          RuntimeDirectoryMode = "0700";
          # Relays restarting while MediaMTX restarts still find their files.
          RuntimeDirectoryPreserve = "yes";
        }
        (lib.mapAttrs (_: lib.mkDefault) {
          # Hardening for MediaMTX and the hooks it runs (override any line with a normal
          # definition). Nothing here may block the hooks: they need AF_UNIX (D-Bus system bus,
          # journald), AF_INET/AF_INET6 (Control Plane, MediaMTX API) and write access to the
          # runtime directory only.
          NoNewPrivileges = true;
          CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
          AmbientCapabilities = lib.optionals privilegedPort [ "CAP_NET_BIND_SERVICE" ];
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          # allowVideoAccess: MediaMTX reads cameras from /dev/video*.
          PrivateDevices = !(mtx.allowVideoAccess or false);
          ProtectClock = true;
          ProtectHostname = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          # AF_INET/AF_INET6: ingest, Control Plane, Control API; AF_UNIX: D-Bus and journald;
          # AF_NETLINK: MediaMTX lists interfaces for WebRTC ICE candidates.
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
            "AF_NETLINK"
          ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [ "@system-service" ];
          SystemCallErrorNumber = "EPERM";
        })
      ];
    };

    # Only the MediaMTX user, only neustream-relay@<key>.service, only start/restart/stop/
    # reset-failed: the rule shipped in systemd/, with the user NixOS runs MediaMTX as.
    security.polkit.enable = true;
    security.polkit.extraConfig =
      let
        rule = builtins.readFile ../systemd/neustream.rules;
        needle = ''subject.user !== "mediamtx"'';
      in
      if lib.hasInfix needle rule then
        builtins.replaceStrings [ needle ] [ "subject.user !== ${builtins.toJSON mtxUser}" ] rule
      else
        throw "nix/module.nix: systemd/neustream.rules no longer contains `${needle}`; update the user substitution in the module";

    # ---- Relays: neustream-relay@.service and neustream.slice from the package, the module's
    # settings as a drop-in (neustream-relay@.service.d/overrides.conf).
    systemd.packages = [ cfg.package ];
    systemd.services."neustream-relay@" = {
      overrideStrategy = "asDropin";
      # The relay does not read the settings file: its variables come from the unit.
      environment = lib.mapAttrs (_: valueString) (
        lib.getAttrs (builtins.filter (n: effectiveSettings ? ${n}) relayVariables) effectiveSettings
      ) // {
        NEUSTREAM_FFMPEG = lib.getExe' cfg.relay.ffmpegPackage "ffmpeg";
      };
      serviceConfig = {
        CPUQuota = cfg.relay.cpuQuota;
        MemoryMax = cfg.relay.memoryMax;
        RestartSec = cfg.relay.restartSec;
      };
    };

    # ---- neustream-reconcile.service and .timer from the package; the module's secrets and
    # interval as drop-ins.
    systemd.services.neustream-reconcile = asHooksUser;
    systemd.timers.neustream-reconcile = {
      overrideStrategy = "asDropin";
      wantedBy = [ "timers.target" ];
      timerConfig.OnUnitActiveSec = cfg.reconcile.interval;
    };

    # ---- neustream-refresh.service and .timer from the package (changed destinations of live
    # streams; NEUSTREAM_REFRESH_INTERVAL in settings, 0 off).
    systemd.services.neustream-refresh = asHooksUser;
    systemd.timers.neustream-refresh = {
      overrideStrategy = "asDropin";
      wantedBy = [ "timers.target" ];
    };

    networking.firewall.allowedUDPPorts = lib.optionals (cfg.openFirewall && cfg.srt.enable) [
      cfg.srt.port
    ];
    networking.firewall.allowedTCPPorts =
      lib.optionals cfg.openFirewall (
        [ cfg.rtmpPort ] ++ lib.optionals cfg.rtmps.enable [ cfg.rtmps.port ]
      )
      ++ lib.optionals (cfg.metrics.enable && cfg.metrics.openFirewall) [ cfg.metrics.port ];
  }

  (lib.mkIf cfg.metrics.enable {
    # ---- Metrics: neustream-metrics.socket and .service from the package; the address as a
    # drop-in, the socket started at boot.
    systemd.sockets.neustream-metrics = {
      overrideStrategy = "asDropin";
      wantedBy = [ "sockets.target" ];
      # The hooks (MediaMTX's user) send their reports to the datagram socket.
      socketConfig.SocketGroup = mtxUser;
      socketConfig.ListenStream = [
        ""
        (
          if lib.hasInfix ":" cfg.metrics.listenAddress then
            "[${cfg.metrics.listenAddress}]:${toString cfg.metrics.port}"
          else
            "${cfg.metrics.listenAddress}:${toString cfg.metrics.port}"
        )
      ];
    };
    systemd.services.neustream-metrics = {
      overrideStrategy = "asDropin";
      environment.NEUSTREAM_METRICS_STREAM_LABEL = cfg.metrics.streamLabel;
    };
    # The exporter's user (systemd/neustream.sysusers.conf on Debian): static, because
    # dbus-daemon does not admit DynamicUser= users, and the exporter reads unit properties
    # over D-Bus.
    users.users.neustream-metrics = {
      isSystemUser = true;
      group = "neustream-metrics";
      description = "Neustream metrics exporter";
    };
    users.groups.neustream-metrics = { };
  })
  ]);

  meta.maintainers = [ ];
}
