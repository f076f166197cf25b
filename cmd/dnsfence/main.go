// Command dnsfence is a forwarding DNS resolver that answers NXDOMAIN for
// TikTok and ByteDance names asked from government-device address ranges
// and forwards everything else upstream untouched.
//
// Usage:
//
//	dnsfence [serve] [-config FILE]                    serve
//	dnsfence check [-config FILE] [-strict]            validate and summarise
//	dnsfence explain [-config FILE] CLIENT NAME [TYPE] why a name is blocked or not (CLIENT an address or an ECS network)
//	dnsfence health [-url URL] [-timeout D]            whether a running dnsfence is ready (its /readyz)
//	dnsfence version                                   the version
//	dnsfence help [COMMAND]                            usage
//
// Flags may stand anywhere among a command's arguments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/configs"
	"github.com/dnsfence/dnsfence/resolver"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand of the command line.
type command struct {
	name    string
	args    string // the arguments after the flags, for usage lines
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
	flags   func() *flag.FlagSet // its flags, for help; nil: none
}

// commands are the subcommands, in the order help lists them. serve is the
// default when the first argument is a flag or there is none.
var commands []command

func init() {
	commands = []command{
		{"serve", "", "answer DNS queries (the default command)", runServe,
			func() *flag.FlagSet { return serveFlags().fs }},
		{"check", "", "load the configuration, lists and ranges as serve would and report every problem;\n" +
			"exit 0 when serve would start with them (skipped lines are warnings), 1 when it would not;\n" +
			"with -strict, warnings exit 1 too", runCheck,
			func() *flag.FlagSet { return checkFlags().fs }},
		{"explain", "CLIENT NAME [TYPE]", "the decision for one client's query and every reason for it;\n" +
			"CLIENT is an address, or a network (10.1.2.0/24) as a trusted proxy's EDNS Client Subnet names one;\n" +
			"exit 0 forwarded (or answered from dnsfence's own zones), 1 blocked, 2 error, 3 refused (client outside allowed_clients, or a zone transfer), 4 SERVFAIL (a remote list without a copy, sources.servfail_until_ready)", runExplain,
			func() *flag.FlagSet { return explainFlags().fs }},
		{"health", "", "ask a running dnsfence's /readyz, or -url another endpoint (Docker's HEALTHCHECK asks /startupz: the image has no curl);\n" +
			"exit 0 ready, 1 not ready or unreachable, 2 bad command line", runHealth,
			func() *flag.FlagSet { return healthFlags().fs }},
		{"version", "", "print the version", runVersion, nil},
		{"help", "[COMMAND]", "this text, or one command's usage and flags", runHelp, nil},
	}
}

// run is main without the exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && isHelpFlag(args[0]) {
			usage(stdout)
			return 0
		}
		return runServe(args, stdout, stderr) // serve's -version too
	}
	if c, ok := commandNamed(args[0]); ok {
		return c.run(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "dnsfence: unknown command %q", args[0])
	if strings.ContainsAny(args[0], "./") {
		fmt.Fprintf(stderr, " (a configuration file? `dnsfence -config %s`)", args[0])
	} else {
		fmt.Fprint(stderr, didYouMean(args[0], commandNames()))
	}
	fmt.Fprint(stderr, "\n\n")
	usage(stderr)
	return 2
}

func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// usage prints every command.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: dnsfence [COMMAND] [FLAGS] [ARGUMENTS]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, strings.ReplaceAll(c.summary, "\n", "\n           "))
	}
	fmt.Fprintln(w, "\nFlags may stand anywhere among a command's arguments. `dnsfence help COMMAND` lists them.")
}

// commandUsage prints one command's usage line, summary and flags.
func commandUsage(w io.Writer, c command) {
	line := "dnsfence " + c.name
	var fs *flag.FlagSet
	if c.flags != nil {
		fs = c.flags()
		line += " [FLAGS]"
	}
	if c.args != "" {
		line += " " + c.args
	}
	fmt.Fprintf(w, "usage: %s\n\n%s\n", line, c.summary)
	if fs != nil {
		fmt.Fprintln(w, "\nflags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// didYouMean is "; did you mean NAME?" for the name of names that word
// most likely misspells (config.Closest, as for the configuration's
// keys), or "" when none is close.
func didYouMean(word string, names []string) string {
	if guess := config.Closest(word, names); guess != "" {
		return "; did you mean " + guess + "?"
	}
	return ""
}

// commandNames are the commands' names, in the order help lists them.
func commandNames() []string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return names
}

// commandNamed is the command called name.
func commandNamed(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stdout)
		return 0
	}
	if c, ok := commandNamed(args[0]); ok {
		commandUsage(stdout, c)
		return 0
	}
	fmt.Fprintf(stderr, "dnsfence help: unknown command %q%s\n\n", args[0], didYouMean(args[0], commandNames()))
	usage(stderr)
	return 2
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	// version takes nothing: `dnsfence version -config x.yaml` or `version
	// check` is a slip that printing the version and exit 0 would hide.
	if len(args) > 0 && isHelpFlag(args[0]) {
		c, _ := commandNamed("version")
		commandUsage(stdout, c)
		return 0
	}
	if !noArguments("version", args, "version takes no arguments", stderr) {
		return 2
	}
	fmt.Fprintln(stdout, versionString())
	return 0
}

// parseFlags parses a command's flags wherever they stand among its
// arguments (`explain 10.1.2.3 www.tiktok.com -json` as well as `explain
// -json 10.1.2.3 www.tiktok.com`) and returns the other arguments in order;
// after "--" every argument is a positional one. -h prints the command's
// usage and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		left := fs.Args()
		if len(left) == 0 {
			return rest, nil
		}
		if consumed := len(args) - len(left); consumed > 0 && args[consumed-1] == "--" {
			return append(rest, left...), nil
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
}

// otherToolFlags are the flags other DNS servers name their
// configuration file with, and the flag of dnsfence's meant: Unbound's and
// Blocky's -c (Blocky's --config is dnsfence's too), CoreDNS's -conf,
// dnsmasq's -C and --conf-file.
var otherToolFlags = map[string]string{"c": "config", "C": "config", "conf": "config", "conf-file": "config", "config-file": "config"}

// flagMeant is the flag of names that bad, a flag no command has, most
// likely means: a misspelling (config.Closest), or another DNS server's
// flag for what a flag of names does (otherToolFlags); "" for none.
func flagMeant(bad string, names []string) string {
	if guess := config.Closest(bad, names); guess != "" {
		return guess
	}
	if meant, ok := otherToolFlags[bad]; ok && slices.Contains(names, meant) {
		return meant
	}
	return ""
}

// parseCommand parses args for the command called name with fs: its flags
// anywhere, -h printing its usage. done is true when the caller should
// return code at once (help asked for, or bad flags). Help asked for goes
// to stdout with exit 0, as the top level's and `help COMMAND`'s do (`dnsfence
// check -h | grep strict`); a bad flag's error and the usage go to stderr,
// exit 2.
func parseCommand(name string, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (rest []string, code int, done bool) {
	c, _ := commandNamed(name)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // the flag package calls it for -h and for an error alike: said below
	rest, err := parseFlags(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		commandUsage(stdout, c)
		return nil, 0, true
	case err != nil:
		// The flag package has said "flag provided but not defined: -confg".
		if bad, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
			var names []string
			fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
			if guess := flagMeant(strings.TrimLeft(bad, "-"), names); guess != "" {
				fmt.Fprintf(stderr, "did you mean -%s?\n", guess)
			}
		}
		fmt.Fprintln(stderr)
		commandUsage(stderr, c)
		return nil, 2, true
	}
	// -config "" (a variable that was never set: -config "$CONFIG") is
	// no request for the embedded default, which would check or serve
	// a loopback test configuration in the deployment's place, as
	// unbound-checkconf "" says it cannot open "".
	empty := false
	fs.Visit(func(f *flag.Flag) { empty = empty || f.Name == "config" && f.Value.String() == "" })
	if empty {
		fmt.Fprintf(stderr, "dnsfence %s: -config is empty; give the configuration file, or leave -config out for the embedded default\n", name)
		return nil, 2, true
	}
	return rest, 0, false
}

// noArguments reports whether the command called name was given no
// positional argument, saying what to do instead (hint) when it was.
func noArguments(name string, rest []string, hint string, stderr io.Writer) bool {
	if len(rest) == 0 {
		return true
	}
	if strings.Contains(hint, "%s") {
		hint = fmt.Sprintf(hint, rest[0])
	}
	fmt.Fprintf(stderr, "dnsfence %s: unexpected argument %q (%s)\n", name, rest[0], hint)
	return false
}

// firstArgument is the first argument of args that is neither one of
// fs's flags nor a flag's value, as fs.Parse would find it, without
// parsing: the flags after it may be another command's.
func firstArgument(fs *flag.FlagSet, args []string) (string, bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				return args[i+1], true
			}
			return "", false
		}
		if len(a) < 2 || a[0] != '-' {
			return a, true
		}
		name, _, value := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil || value {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		i++ // the flag's value
	}
	return "", false
}

// configFlag defines the -config flag every command that loads the
// configuration takes.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "configuration file (default: the embedded default)")
}

// serveOptions are serve's flags.
type serveOptions struct {
	fs         *flag.FlagSet
	config     *string
	version    *bool
	cpuProfile *string
}

func serveFlags() serveOptions {
	fs := flag.NewFlagSet("dnsfence serve", flag.ContinueOnError)
	return serveOptions{
		fs:         fs,
		config:     configFlag(fs),
		version:    fs.Bool("version", false, "print the version and exit"),
		cpuProfile: fs.String("cpuprofile", "", "write a CPU profile to this file until exit (for performance work)"),
	}
}

// waitUnlessStopped runs wait; a signal on stop meanwhile calls cancel,
// which must end wait soon, and is returned once wait has; nil when wait
// ended first, the signal, if any, left on stop for serve. Start's waits
// (for files being written, for remote lists) may last a minute: a
// SIGTERM must end them within systemd's TimeoutStopSec, not after them.
func waitUnlessStopped(stop <-chan os.Signal, cancel func(), wait func()) os.Signal {
	done := make(chan struct{})
	stopped := make(chan os.Signal, 1)
	go func() {
		defer close(stopped)
		select {
		case sig := <-stop:
			stopped <- sig
			cancel()
		case <-done:
		}
	}()
	wait()
	close(done)
	return <-stopped // nil once closed empty
}

// startBudget is how long serve may take, from the configuration read,
// to answer: Start's waits for the files a writer holds open (up to
// reload.writer_wait) and for the remote lists' first copies (up to
// resolver.StartWait), and a minute to load the lists and open the
// listeners. It is sent to systemd (EXTEND_TIMEOUT_USEC, which only ever
// lengthens the unit's TimeoutStartSec, 90 s by default): with a longer
// writer_wait, systemd killed dnsfence mid-wait and started it again,
// for as long as the writer stayed.
func startBudget(cfg *config.Config) time.Duration {
	return cfg.Reload.WriterWait + resolver.StartWait + time.Minute
}

// readConfig reads the configuration file at path as config.LoadSteady
// does, with the default reload.debounce and writer_wait (a wait that gave
// up said on stderr: no logger yet, the file says how to log), or the
// embedded default when path is empty. A configuration written in place
// while dnsfence starts (a template, a sync) would be read cut at a line:
// policies or block lists past the cut missing, nothing to measure that
// against, and every name they blocked answered. Start reads it again if
// it changed while the lists were read, and reloads wait for it as for
// every file (Watcher). A signal on stop ends a wait, and is returned as
// sig: serve stops without serving, within systemd's TimeoutStopSec.
func readConfig(path string, stop <-chan os.Signal, stderr io.Writer) (cfg *config.Config, sig os.Signal, err error) {
	if path == "" {
		cfg, err = loadConfig(path)
		return cfg, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig = waitUnlessStopped(stop, cancel, func() {
		cfg, err = config.LoadSteady(ctx, path, config.DefaultDebounce, blocklist.DefaultWriterWait,
			func() (*config.Config, error) { return loadConfig(path) },
			func(err error) { fmt.Fprintf(stderr, "reading the configuration as it is: %v\n", err) })
	})
	if sig != nil {
		return nil, sig, nil
	}
	return cfg, nil, err
}

// loadConfig reads the configuration file, or the embedded default when
// path is empty.
func loadConfig(path string) (*config.Config, error) {
	if path != "" {
		return config.Load(path)
	}
	data, err := configs.FS.ReadFile(configs.DefaultName)
	if err != nil {
		return nil, err
	}
	return config.ParseEmbedded("embedded:"+configs.DefaultName, data, configs.FS.ReadFile)
}

func runServe(args []string, stdout, stderr io.Writer) int {
	opts := serveFlags()
	// A command after serve's flags (dnsfence -config FILE check -strict)
	// is said to come first before its own flags (-strict) fail serve's.
	if a, ok := firstArgument(opts.fs, args); ok {
		if _, ok := commandNamed(a); ok {
			noArguments("serve", []string{a}, "the command comes first, its flags after it: `dnsfence %s -config FILE`", stderr)
			return 2
		}
	}
	rest, code, done := parseCommand("serve", opts.fs, args, stdout, stderr)
	if done {
		return code
	}
	if !noArguments("serve", rest, "did you mean `dnsfence -config %s`?", stderr) {
		return 2
	}
	configPath, version, cpuProfile := opts.config, opts.version, opts.cpuProfile
	if *version {
		fmt.Fprintln(stdout, versionString())
		return 0
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer stop()
	}
	// Signals are taken from the start: a SIGTERM while the lists load or
	// the sockets open must stop dnsfence the orderly way, not by the
	// default action (found by the shutdown test under CPU load). SIGTERM
	// and SIGINT have a channel of their own: the signal package drops a
	// signal whose channel is full, and SIGHUPs queued there must never
	// crowd out the one that stops dnsfence. SIGHUPs beyond one pending
	// are one reload.
	// A log reader that goes away (journald stopped, the end of a
	// `dnsfence | tee`, a log shipper's pipe) must not take the resolver
	// with it: Go dies of SIGPIPE at a write to a broken stdout or
	// stderr, whatever disposition it was started with (systemd's
	// IgnoreSIGPIPE=yes included), and systemd counts that death a clean
	// exit, which Restart=on-failure does not restart. Ignored, such a
	// write fails with EPIPE, the lines are lost, and queries are
	// answered as before.
	signal.Ignore(syscall.SIGPIPE)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// SIGUSR1 and SIGUSR2 end a Go program by default, and operators send
	// them: CoreDNS reloads on SIGUSR1, dnsmasq logs its statistics on it
	// and reopens its log on SIGUSR2, and logrotate scripts carry such
	// kills over. They are logged and ignored, never a stop nor a reload
	// (SIGHUP's reload applies what the guards hold, which no signal
	// meant for another program may do).
	foreign := make(chan os.Signal, 1)
	signal.Notify(foreign, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(foreign)
	cfg, sig, err := readConfig(*configPath, stop, stderr)
	if sig != nil {
		fmt.Fprintf(stderr, "stopping before serving: %v\n", sig)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log, level, err := newLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer func() { _ = log.Sync() }()
	if cfg.Embedded {
		laptopFriendly(log, cfg)
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := resolver.NewMetrics(registry)
	// The handler starts without state so that /readyz says "loading"
	// until every list and range file has loaded.
	handler := resolver.NewHandler(log.Named("query"), nil, metrics)
	stopHTTP, ok := startHTTPEndpoint(log, cfg, resolver.HTTPHandler(handler, registry, resolver.DefaultReadyWindow))
	if !ok {
		return 1
	}
	defer stopHTTP()

	reloader := resolver.NewReloader(log.Named("reload"), handler, func() (*config.Config, error) {
		return loadConfig(*configPath)
	})
	reloader.AfterReload = func(s *resolver.Snapshot) {
		tuneGC(log)
		// log.level applies at a reload (format and output need a new
		// logger: the reloader says they wait for a restart).
		if l, err := zapcore.ParseLevel(s.Config.Log.Level); err == nil {
			level.SetLevel(l)
		}
	}
	// Remote lists (URLs, zone transfers) start with their disk copies;
	// the first snapshot waits briefly for each, then is published.
	sourcesCtx, stopSources := context.WithCancel(context.Background())
	defer stopSources()
	// Start waits for the lists a writer holds open (up to
	// reload.writer_wait) and for the remote lists' first copies (up to
	// 10 s): a SIGTERM or SIGINT meanwhile ends the wait (with the
	// sources, which end at a stop anyway), and dnsfence stops without
	// serving, rather than after the wait, past systemd's TimeoutStopSec.
	notifySystemd(log, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", startBudget(cfg).Microseconds()))
	var snap *resolver.Snapshot
	if sig := waitUnlessStopped(stop, stopSources, func() { snap, err = reloader.Start(sourcesCtx, cfg) }); sig != nil {
		log.Info("stopping before serving", zap.String("signal", sig.String()))
		return 0
	}
	if err != nil {
		log.Error("loading lists, ranges and upstreams", zap.Error(err))
		return 1
	}
	logSnapshot(log, snap)
	// As after a reload: the GC target, and log.level, which Start may
	// have read anew (a configuration changed while it read the lists).
	reloader.AfterReload(snap)

	// The certificate of the encrypted listeners, watched until exit.
	cert, err := resolver.OpenCertificate(log.Named("tls"), cfg, metrics)
	if err != nil {
		log.Error("loading the TLS certificate", zap.Error(err))
		return 1
	}
	defer cert.Close()

	server := resolver.NewServer(log.Named("server"), handler)
	if err := server.Start(cfg.Listen); err != nil {
		log.Error("starting", zap.Error(err))
		return 1
	}
	if err := server.StartEncrypted(cfg, cert); err != nil {
		log.Error("starting the encrypted listeners", zap.Error(err))
		return 1
	}
	handler.Serving() // /startupz: 200
	log.Info("dnsfence started", zap.String("version", versionString()), zap.String("config", cfg.File),
		zap.Strings("upstreams", snap.Forwarder().Upstreams()))
	notifySystemd(log, "READY=1")
	go func() {
		// Its walk of every entry leaves about 100 bytes of garbage an
		// entry: collected often meanwhile, so that it does not fill the
		// GC's headroom (a million-entry list's start peaked 10 MB
		// higher), and returned to the system after, as tuneGC returns
		// the load's.
		withGCPercent(lintGCPercent, func() { logLint(log, snap) })
		debug.FreeOSMemory()
	}()

	serveUntilStopped(log, signals{stop: stop, hup: hup, foreign: foreign}, running{handler: handler, reloader: reloader, cert: cert, server: server,
		stopSources: stopSources})
	return 0
}

// stopSlack is what a stop takes beyond shutdown_delay and the drain of
// the queries in flight (shutdownBudget): closing connections in order,
// a reload's end, the metrics endpoint's.
const stopSlack = 5 * time.Second

// lameDuck answers on for delay (shutdown_delay), /readyz already 503, so
// that a Kubernetes Service or a load balancer takes the instance out
// before its listeners stop: queries it sends meanwhile are answered,
// where after the stop they get nothing and their clients wait out a
// timeout (CoreDNS's health lameduck). Another SIGTERM or SIGINT on stop
// ends the wait at once.
func lameDuck(log *zap.Logger, stop <-chan os.Signal, delay time.Duration) {
	if delay <= 0 {
		return
	}
	log.Info("answering for shutdown_delay with /readyz 503, so that load balancers take this instance out first; another SIGTERM or SIGINT stops at once",
		zap.Duration("shutdown_delay", delay))
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case sig := <-stop:
		log.Info("stopping at once", zap.String("signal", sig.String()))
	}
}

// startHTTPEndpoint serves /metrics, /healthz and /readyz on the
// configured address, if any, until stop is called. It reports false when
// that fails, but for the embedded default, which serves DNS without it
// (the port may be taken on a laptop) and says so.
func startHTTPEndpoint(log *zap.Logger, cfg *config.Config, h http.Handler) (stop func(), ok bool) {
	addr := cfg.HTTPAddr()
	if addr == "" {
		return func() {}, true
	}
	stop, err := serveHTTP(log.Named("http"), addr, h)
	switch {
	case err != nil && cfg.Embedded:
		log.Warn("metrics and health endpoint not started: the embedded default serves DNS without it", zap.String("address", addr), zap.Error(err))
		return func() {}, true
	case err != nil:
		log.Error("starting the HTTP endpoint", zap.Error(err))
		return nil, false
	}
	return stop, true
}

// startCPUProfile writes a CPU profile to path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// running is what serve stops, in serveUntilStopped's order.
type running struct {
	handler     *resolver.Handler
	reloader    *resolver.Reloader
	cert        *resolver.Certificate
	server      *resolver.Server
	stopSources func()
}

// shutdownBudget is how long the queries in flight at shutdown may take:
// every upstream's timeout, and one more, as the snapshot serving then
// has them (a reload may have added upstreams or raised the timeout).
func shutdownBudget(snap *resolver.Snapshot) time.Duration {
	return time.Duration(len(snap.Forwarder().Upstreams())+1) * snap.Config.UpstreamTimeout
}

// signals are the channels serve's signals arrive on: stop SIGTERM and
// SIGINT, hup SIGHUP, foreign SIGUSR1 and SIGUSR2, which are logged and
// otherwise ignored.
type signals struct {
	stop, hup, foreign <-chan os.Signal
}

// serveUntilStopped watches the files and serves until SIGTERM or SIGINT
// on sigs.stop (a SIGHUP on sigs.hup reloads everything, the certificate
// too; SIGUSR1 or SIGUSR2 on sigs.foreign is logged at warn), then
// stops in order: /readyz turns not ready, reloading ends (none starts,
// and one under way applies nothing), the watching and the remote lists'
// refreshes end, the listeners stop taking queries and answer those in
// flight, and a reload still under way is waited for, all within
// shutdownBudget. Reloads run beside the wait for stop: a SIGHUP reload
// waits up to 5 s for a writer (Stop ends that wait), and reads a named
// pipe for up to a minute, and a SIGTERM must not wait behind it.
func serveUntilStopped(log *zap.Logger, sigs signals, r running) {
	watchCtx, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	go r.reloader.KeepWatching(watchCtx)
	hupDone := make(chan struct{})
	go func() {
		defer close(hupDone)
		for {
			select {
			case <-watchCtx.Done():
				return
			case s := <-sigs.foreign:
				log.Warn("signal ignored: SIGHUP reloads (and applies what the guards hold), SIGTERM stops",
					zap.String("signal", s.String()))
			case <-sigs.hup:
				if watchCtx.Err() != nil {
					return // stopping: a SIGHUP that came with the SIGTERM starts no reload
				}
				log.Info("SIGHUP: reloading everything")
				if err := r.reloader.Reload(true); errors.Is(err, resolver.ErrStopping) { // logged by the reloader
					return // the certificate is not reloaded either
				}
				r.cert.Reload() // logged when the pair changed
			}
		}
	}()

	sig := <-sigs.stop
	log.Info("stopping", zap.String("signal", sig.String()))
	notifySystemd(log, "STOPPING=1")
	r.handler.Stopping() // /readyz: 503 while the queries in flight finish
	// systemd's TimeoutStopSec (15 s in the shipped unit) must not kill
	// the stop midway: shutdown_delay and the drain after it, or the drain
	// alone, (upstreams + 1) × upstream_timeout, which many upstreams or a
	// long timeout take past it. Asked for at every stop, from one reading
	// of the snapshot, so that the wait is the one asked for: the message
	// lengthens the stop timeout and never shortens it.
	snap := r.handler.Snapshot()
	delay := max(snap.Config.ShutdownDelay, 0)
	notifySystemd(log, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (delay+shutdownBudget(snap)+stopSlack).Microseconds()))
	lameDuck(log, sigs.stop, delay)
	// From here no reload publishes a snapshot: the one serving now is
	// the last, and the budget is its.
	r.reloader.Stop()
	stopWatching()
	r.stopSources()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownBudget(r.handler.Snapshot()))
	defer cancel()
	if err := r.server.Shutdown(shutdownCtx); err != nil {
		log.Warn("shutdown", zap.Error(err))
	}
	// A reload under way (a SIGHUP reading a named pipe, a list being
	// parsed) ends, its snapshot dropped, in what is left of the budget.
	err := r.reloader.Wait(shutdownCtx)
	if err == nil && !doneWithin(shutdownCtx, hupDone) { // the SIGHUP's certificate reload too
		err = fmt.Errorf("waiting for the SIGHUP reload under way: %w", shutdownCtx.Err())
	}
	if err != nil {
		log.Warn("stopped with a reload still under way; it applies nothing", zap.Error(err))
	}
	log.Info("stopped")
}

// doneWithin reports whether done is closed, or closes before ctx ends:
// one closed already counts even when ctx has ended too (the queries in
// flight took the whole shutdown budget), which a select of the two
// would leave to chance.
func doneWithin(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
	}
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// laptopFriendly drops the embedded default's listen addresses whose
// address family this machine lacks (a container without IPv6 loopback),
// with a warning, so that `dnsfence` with no flags starts anywhere. A
// configuration file gets no such leniency: an address it names that
// cannot be served stops the start.
func laptopFriendly(log *zap.Logger, cfg *config.Config) {
	var keep []string
	for _, addr := range cfg.Listen {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
			if err != nil {
				log.Warn("not listening on an address this machine lacks", zap.String("address", addr), zap.Error(err))
				continue
			}
			c.Close()
		}
		keep = append(keep, addr)
	}
	if len(keep) > 0 { // with none left, the start fails loudly on the first
		cfg.Listen = keep
	}
}

// healthOptions are health's flags.
type healthOptions struct {
	fs      *flag.FlagSet
	url     *string
	timeout *time.Duration
}

func healthFlags() healthOptions {
	fs := flag.NewFlagSet("dnsfence health", flag.ContinueOnError)
	return healthOptions{
		fs:      fs,
		url:     fs.String("url", "http://127.0.0.1:9153/readyz", "the readiness `URL` of the running dnsfence (at its http address)"),
		timeout: fs.Duration("timeout", 3*time.Second, "how long to wait for the answer"),
	}
}

// runHealth asks a running dnsfence whether it is ready and exits 0 when it
// is, 1 when it is not or does not answer, printing the body, which says
// what is wrong. The distroless image has no shell or curl, so Docker's
// HEALTHCHECK runs this.
func runHealth(args []string, stdout, stderr io.Writer) int {
	opts := healthFlags()
	rest, code, done := parseCommand("health", opts.fs, args, stdout, stderr)
	if done {
		return code
	}
	if !noArguments("health", rest, "give the address with -url", stderr) {
		return 2
	}
	// A bad flag is an error of the command line (2), not an unready
	// dnsfence (1); and a timeout of 0 or less would be none at all
	// (http.Client), a probe that waits for ever on a dnsfence that took
	// the connection and never answers.
	if *opts.timeout <= 0 {
		fmt.Fprintf(stderr, "dnsfence health: -timeout %s is not a positive duration; give one with a unit, e.g. -timeout 3s\n", *opts.timeout)
		return 2
	}
	u, err := url.Parse(*opts.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "dnsfence health: -url %q is not an http:// or https:// URL; give the readiness URL of dnsfence's http address, e.g. -url http://127.0.0.1:9153/readyz\n", *opts.url)
		return 2
	}
	client := &http.Client{Timeout: *opts.timeout}
	resp, err := client.Get(*opts.url)
	if err != nil {
		fmt.Fprintf(stderr, "dnsfence health: %v\n", err)
		if errors.Is(err, syscall.ECONNREFUSED) {
			// The usual cause: dnsfence is down, or its http key names
			// another address than the URL asked.
			fmt.Fprintf(stderr, "dnsfence health: nothing listens at %s: is dnsfence running, with its http address there? give that address with -url\n", u.Host)
		}
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintf(stdout, "%s %s", resp.Status, body)
	if len(body) == 0 || body[len(body)-1] != '\n' {
		fmt.Fprintln(stdout)
	}
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// gcMu orders the changes of the GC target: tuneGC's at a reload and
// withGCPercent's around the start's lint, which may run at once.
var gcMu sync.Mutex

// lintGCPercent is the GC target while serve lints the configuration at
// start (logLint). Check's public-suffix look at every entry leaves
// about 100 bytes of garbage an entry (publicsuffix.PublicSuffix's
// netip.ParseAddr error for every name, and the name), which filled
// tuneGC's headroom: a million-entry list's peak RSS was 62-63 MB, 53-55
// MB with the target at 5 %, against 47 MB after the load (measured by
// hand with the harness's list, 2026-12-03). The lists hold no pointers,
// so the collections it adds mark little.
const lintGCPercent = 5

// withGCPercent runs f with the GC target at percent, then sets back the
// target it found, unless a reload's tuneGC set another meanwhile. GOGC,
// when set, is left alone, as tuneGC leaves it.
func withGCPercent(percent int, f func()) {
	if os.Getenv("GOGC") != "" {
		f()
		return
	}
	gcMu.Lock()
	old := debug.SetGCPercent(percent)
	gcMu.Unlock()
	f()
	gcMu.Lock()
	defer gcMu.Unlock()
	if now := debug.SetGCPercent(old); now != percent {
		debug.SetGCPercent(now) // tuneGC's, newer than old
	}
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
	gcMu.Lock()
	debug.SetGCPercent(percent)
	gcMu.Unlock()
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

// httpMaxHeaderBytes bounds a request's header on the http endpoint: a
// scrape or a probe sends a few hundred octets, and net/http's default (1
// MiB a connection) let anyone who reaches the address hold that much
// memory with each connection.
const httpMaxHeaderBytes = 8 << 10

// serveHTTP serves /metrics, /healthz and /readyz on addr; the returned
// function stops it. A failed accept is waited out, logged at warn level
// (listen.Patient): net/http stopped the endpoint for good on ENOBUFS or
// ENOMEM, and the probes and scrapes of a dnsfence still serving failed.
func serveHTTP(log *zap.Logger, addr string, h http.Handler) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, listen.BindHint(addr, err))
	}
	return serveHTTPOn(log, ln, h), nil
}

// serveHTTPOn is serveHTTP on a listener of the caller's. The returned
// function returns once the endpoint's goroutine has: a line it logs
// ("http endpoint stopped", for a listener closed under it) is written
// before serve exits, and an ordinary stop logs none.
func serveHTTPOn(log *zap.Logger, ln net.Listener, h http.Handler) func() {
	ln = listen.Patient(ln, log)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
		MaxHeaderBytes: httpMaxHeaderBytes}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http endpoint stopped", zap.Error(err))
		}
	}()
	log.Info("http endpoint listening", zap.String("address", ln.Addr().String()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // closes the listener first: Serve returns
		<-served
	}
}

// maxLintLogged is how many of check's warnings about one file serve logs
// at start (logLint).
const maxLintLogged = 20

// logSnapshot logs the policies and list sizes, and every skipped line of
// the files (a remote list's source logs those of each copy it reads).
func logSnapshot(log *zap.Logger, snap *resolver.Snapshot) {
	for _, w := range snap.Warnings {
		if _, first := blocklist.BadLines(w); first != nil && config.IsRemote(first.File) {
			continue
		}
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

// logLint logs check's warnings (Snapshot.Lint) at start: a start has no
// state before it to hold a change against (a block list emptied while
// dnsfence was stopped blocks nothing), and serve may run where check
// never did. The first maxLintLogged of each file: a list of many
// duplicate entries (lists concatenated) has one warning each, and a line
// each at every start would flood the journal (journald drops a service's
// lines past 10,000 in 30 s, "dnsfence started" among them); check lists
// them all. serve calls it once the listeners are open: its public-suffix
// look at every entry took 0.37 s of a million-entry list's 0.75 s start.
func logLint(log *zap.Logger, snap *resolver.Snapshot) {
	shown := map[string]int{}
	for _, w := range snap.Lint() {
		if shown[w.File]++; shown[w.File] <= maxLintLogged {
			log.Warn("likely mistake in the configuration (check -strict fails on it)",
				zap.String("file", w.File), zap.Int("line", w.Line), zap.String("warning", w.Msg))
		}
	}
	for _, file := range slices.Sorted(maps.Keys(shown)) {
		if n := shown[file] - maxLintLogged; n > 0 {
			log.Warn("more likely mistakes in the configuration not logged; dnsfence check lists them",
				zap.String("file", file), zap.Int("not_logged", n))
		}
	}
}

// newLogger builds the zap logger the configuration asks for, and the
// level it logs at, which a reload sets anew.
func newLogger(c config.Log) (*zap.Logger, zap.AtomicLevel, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, zap.AtomicLevel{}, fmt.Errorf("log.level: %w", err)
	}
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.OutputPaths = []string{c.Output} // "stderr" or "stdout"
	zc.Sampling = nil                   // the audit trail must not be sampled away
	zc.EncoderConfig.TimeKey = "time"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.DisableStacktrace = true
	log, err := zc.Build()
	return log, zc.Level, err
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
