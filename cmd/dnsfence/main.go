// Command dnsfence is a forwarding DNS resolver that answers NXDOMAIN for
// TikTok and ByteDance names asked from government-device address ranges
// and forwards everything else upstream untouched.
//
// Usage:
//
//	dnsfence [-config FILE]                      serve
//	dnsfence check -config FILE                  validate and summarise
//	dnsfence explain -config FILE CLIENT NAME    why a name is blocked or not
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/dnsfence/dnsfence/configs"
	"github.com/dnsfence/dnsfence/resolver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return runCheck(args[1:], stdout, stderr)
		case "explain":
			return runExplain(args[1:], stdout, stderr)
		}
	}
	return runServe(args, stdout, stderr)
}

// loadConfig reads the configuration file, or the embedded default when
// path is empty.
func loadConfig(path string) (*resolver.Config, error) {
	if path != "" {
		return resolver.LoadConfig(path)
	}
	data, err := configs.FS.ReadFile(configs.DefaultName)
	if err != nil {
		return nil, err
	}
	return resolver.ParseEmbeddedConfig("embedded:"+configs.DefaultName, data, configs.FS.ReadFile)
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dnsfence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (default: the embedded default)")
	version := fs.Bool("version", false, "print the version and exit")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until exit (for performance work)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, versionString())
		return 0
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer func() { _ = log.Sync() }()

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := resolver.NewMetrics(registry)
	// The handler starts without state so that /readyz says "loading"
	// until every list and range file has loaded.
	handler := resolver.NewHandler(log.Named("query"), nil, metrics)
	if addr := cfg.HTTPAddr(); addr != "" {
		stopHTTP, err := serveHTTP(log.Named("http"), addr, resolver.HTTPHandler(handler, registry, resolver.DefaultReadyWindow))
		if err != nil {
			log.Error("starting the HTTP endpoint", zap.Error(err))
			return 1
		}
		defer stopHTTP()
	}

	snap, err := resolver.BuildSnapshot(cfg, nil)
	if err != nil {
		log.Error("loading lists and ranges", zap.Error(err))
		return 1
	}
	logSnapshot(log, snap)
	handler.Store(snap)
	tuneGC(log)

	server := resolver.NewServer(log.Named("server"), handler)
	if err := server.Start(cfg.Listen); err != nil {
		log.Error("starting", zap.Error(err))
		return 1
	}
	log.Info("dnsfence started", zap.String("version", versionString()), zap.String("config", cfg.File),
		zap.Strings("upstreams", snap.Forwarder.Upstreams()))

	reloader := resolver.NewReloader(log.Named("reload"), handler, func() (*resolver.Config, error) {
		return loadConfig(*configPath)
	})
	reloader.AfterReload = func(*resolver.Snapshot) { tuneGC(log) }
	watchCtx, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	go func() {
		if err := reloader.Watch(watchCtx); err != nil {
			log.Error("file watching stopped; SIGHUP still reloads", zap.Error(err))
		}
	}()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for sig := range signals {
		if sig == syscall.SIGHUP {
			log.Info("SIGHUP: reloading everything")
			_ = reloader.Reload(true) // logged by the reloader
			continue
		}
		log.Info("stopping", zap.String("signal", sig.String()))
		break
	}
	stopWatching()
	// In-flight queries get the whole upstream budget to finish.
	budget := time.Duration(len(snap.Forwarder.Upstreams())+1) * cfg.UpstreamTimeout
	shutdownCtx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil {
		log.Warn("shutdown", zap.Error(err))
	}
	log.Info("stopped")
	return 0
}

// gcHeadroom is how much garbage the heap may hold above the live data
// before a collection: what the process adds to its RSS under load.
const gcHeadroom = 8 << 20

// tuneGC returns the load's transient memory to the system, then sets the
// GC target so that garbage may add about gcHeadroom to the live heap. Go's
// default lets it add as much again as is live, which with a million-entry
// list doubles the RSS under load; the lists hold no pointers, so more
// frequent collections cost little. Small deployments keep Go's default.
// GOGC, when set, is left alone.
func tuneGC(log *zap.Logger) {
	debug.FreeOSMemory()
	if os.Getenv("GOGC") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	live := sample[0].Value.Uint64()
	percent := gcPercent(live)
	debug.SetGCPercent(percent)
	log.Info("memory", zap.Uint64("heap_live_bytes", live), zap.Int("gc_percent", percent))
}

// gcPercent is the GC target that lets garbage add about gcHeadroom to a
// live heap of live bytes: Go's default 100 for small heaps, down to 20.
func gcPercent(live uint64) int {
	if live == 0 {
		return 100
	}
	return int(min(100, max(20, 100*gcHeadroom/live)))
}

// serveHTTP serves /metrics, /healthz and /readyz on addr; the returned
// function stops it.
func serveHTTP(log *zap.Logger, addr string, h http.Handler) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http endpoint stopped", zap.Error(err))
		}
	}()
	log.Info("http endpoint listening", zap.String("address", ln.Addr().String()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// logSnapshot logs the policies and list sizes, and every skipped line.
func logSnapshot(log *zap.Logger, snap *resolver.Snapshot) {
	for _, w := range snap.Warnings {
		log.Warn("skipped bad lines", zap.Error(w))
	}
	for path, l := range snap.Lists {
		log.Info("list loaded", zap.String("list", path), zap.Int("entries", l.Len()), zap.String("list_sha256", l.Hash()))
	}
	for _, p := range snap.Config.Policies {
		log.Info("policy", zap.String("policy", p.Name), zap.Strings("clients", p.Clients),
			zap.Strings("client_files", p.ClientFiles), zap.Strings("block", p.Block), zap.Strings("allow", p.Allow),
			zap.String("action", string(p.Action)))
	}
	if len(snap.Config.Policies) == 0 {
		log.Warn("no policies: every query is forwarded")
	}
}

// newLogger builds the zap logger the configuration asks for.
func newLogger(c resolver.LogConfig) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Sampling = nil // the audit trail must not be sampled away
	zc.EncoderConfig.TimeKey = "time"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.DisableStacktrace = true
	return zc.Build()
}

// versionString is the module version and VCS revision of the build.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dnsfence (unknown version)"
	}
	v := "dnsfence " + bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision", "vcs.time", "vcs.modified":
			v += " " + s.Key + "=" + s.Value
		}
	}
	return v + " " + bi.GoVersion
}
