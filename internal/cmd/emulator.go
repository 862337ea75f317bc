package cmd

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/batchgpt/batchgpt/internal/emulator"
	"github.com/batchgpt/batchgpt/internal/emulator/batchmode"
)

func (e *env) emulatorCommand() *cli.Command {
	return &cli.Command{
		Name:  "emulator",
		Usage: "serve an emulation of the YandexGPT async API (and IAM) on loopback, for trying and testing batchgpt",
		Description: "Serves POST /foundationModels/v1/completionAsync, GET /operations/{id}, GET /operations/{id}:cancel,\n" +
			"POST /foundationModels/v1/tokenize and /tokenizeCompletion (the free tokenizer: one token per word, as the usage\n" +
			"of its answers counts), POST /iam/v1/tokens, the VM metadata token path and GET /emulator/stats, with the API's\n" +
			"bodies and errors. A cancel stops a running operation (it then reads as done with error code 1 CANCELLED) and\n" +
			"leaves a finished one as it is.\n" +
			"Latency: 0, 2s, uniform:100ms:2s, lognormal:1s:0.8[:max]. Faults: kind=rate pairs, kinds\n" +
			"429, 500, 503, reset, slow, garbage, op_error, op_perm_error, fresh404, no_done, submit_lost, content_filter, vanish;\n" +
			"slow_delay=DURATION.\n" +
			"Answers: \"emulated answer <hash> to: <the prompt>\", one token per word, ALTERNATIVE_STATUS_FINAL; cut to\n" +
			"completionOptions.maxTokens words with ALTERNATIVE_STATUS_TRUNCATED_FINAL when longer; ALTERNATIVE_STATUS_CONTENT_FILTER\n" +
			"(a canned refusal, no usage) when a message contains " + emulator.ContentFilterTrigger + " or the content_filter fault hits.\n" +
			"Examples:\n" +
			"   batchgpt emulator --addr 127.0.0.1:8080 --latency lognormal:2s:0.7 --faults 429=0.05,reset=0.01\n" +
			"   BATCHGPT_ENDPOINT=http://127.0.0.1:8080 BATCHGPT_OPERATIONS_ENDPOINT=http://127.0.0.1:8080 \\\n" +
			"     YC_API_KEY=anything batchgpt run --folder b1gemulatorfolder000 samples/prompts.jsonl\n" +
			"Batch mode (off unless --grpc-addr is given): plaintext gRPC serving AI Studio's DatasetService,\n" +
			"TextGenerationBatchService.Completion, BatchInferenceService and OperationService.Get, with the same credentials;\n" +
			"datasets are uploaded to and results (Parquet) downloaded from presigned URLs on --storage-addr. Tasks run\n" +
			"--batch-size rows a batch at --batch-rows-per-second. Batch faults: invalid_line=N (repeatable), fail_batch=N,\n" +
			"unavailable=RATE, stop_after=N.\n" +
			"   batchgpt emulator --grpc-addr 127.0.0.1:9090 --batch-faults unavailable=0.05,fail_batch=3",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "listen `ADDRESS` (loopback; another address is served with a warning)"},
			&cli.StringFlag{Name: "latency", Value: "lognormal:2s:0.7:30s", Usage: "operation latency distribution `SPEC`"},
			&cli.StringFlag{Name: "faults", Usage: "injected `FAULTS`, kind=rate,..."},
			&cli.Float64Flag{Name: "submit-rps", Usage: "enforce a submission quota per second (0 = none)"},
			&cli.IntFlag{Name: "submit-per-hour", Usage: "enforce a submission quota per hour (0 = none)"},
			&cli.Float64Flag{Name: "poll-rps", Usage: "enforce a poll quota per second (0 = none)"},
			&cli.Float64Flag{Name: "tokenize-rps", Usage: "enforce a tokenizer quota per second (0 = none; the API's default is 50)"},
			&cli.StringSliceFlag{Name: "api-key", Usage: "accepted API key (repeatable; default: any key)"},
			&cli.StringSliceFlag{Name: "deny-model", Usage: "answer 403 PERMISSION_DENIED to completionAsync for model `URI` (repeatable)"},
			&cli.StringSliceFlag{Name: "user-token", Usage: "accept `TOKEN` as the IAM token of a person's account: completionAsync then needs x-folder-id, as the real API does (repeatable)"},
			&cli.DurationFlag{Name: "token-lifetime", Value: 12 * time.Hour, Usage: "lifetime of issued IAM tokens"},
			&cli.DurationFlag{Name: "retention", Value: 72 * time.Hour, Usage: "how long finished operations are kept"},
			&cli.StringFlag{Name: "write-key", Usage: "write a fresh service-account authorized-key file to `PATH` that this emulator accepts"},
			&cli.BoolFlag{Name: "log", Usage: "log every request to stderr"},
			&cli.StringFlag{Name: "grpc-addr", Usage: "serve the batch mode's gRPC services on `ADDRESS` (loopback; off when empty)"},
			&cli.StringFlag{Name: "storage-addr", Value: "127.0.0.1:0", Usage: "serve the batch mode's presigned upload and download URLs on `ADDRESS` (loopback)"},
			&cli.Float64Flag{Name: "batch-rows-per-second", Value: 50, Usage: "processing speed of a batch task (0 = no waiting)"},
			&cli.IntFlag{Name: "batch-size", Value: batchmode.DefaultBatchSize, Usage: "rows in one batch of a batch task"},
			&cli.DurationFlag{Name: "batch-step-delay", Usage: "how long a batch task stays CREATED, then PENDING, and how long a validation runs"},
			&cli.StringFlag{Name: "batch-faults", Usage: "injected batch-mode `FAULTS`, kind=value,..."},
		},
		Action: func(c *cli.Context) error {
			lat, err := emulator.ParseLatency(c.String("latency"))
			if err != nil {
				return usagef("--latency: %v", err)
			}
			faults, err := emulator.ParseFaults(c.String("faults"))
			if err != nil {
				return usagef("--faults: %v", err)
			}
			iam := emulator.NewIAM(c.Duration("token-lifetime"), nil)
			cfg := emulator.Config{Latency: lat, Faults: faults, SubmitRPS: c.Float64("submit-rps"),
				SubmitPerHour: c.Int("submit-per-hour"), PollRPS: c.Float64("poll-rps"), TokenizeRPS: c.Float64("tokenize-rps"), APIKeys: c.StringSlice("api-key"),
				UserTokens: c.StringSlice("user-token"), DeniedModels: c.StringSlice("deny-model"),
				Retention: c.Duration("retention"), IAM: iam, Seed: time.Now().UnixNano()}
			if c.Bool("log") {
				cfg.Logf = func(format string, args ...any) { fmt.Fprintf(e.stderr, format+"\n", args...) }
			}
			if p := c.String("write-key"); p != "" {
				key, err := iam.GenerateKey(2048)
				if err != nil {
					return err
				}
				if err := os.WriteFile(p, key, 0o600); err != nil {
					return fmt.Errorf("write key: %w", err)
				}
				fmt.Fprintf(e.stderr, "wrote a service-account key for this emulator to %s\n", p)
			}
			batchFaults, err := batchmode.ParseFaults(c.String("batch-faults"))
			if err != nil {
				return usagef("--batch-faults: %v", err)
			}
			addr := c.String("addr")
			if !loopbackAddr(addr) {
				fmt.Fprintf(e.stderr, "batchgpt: warning: --addr %s is not a loopback address: the emulator serves plain http "+
					"and its IAM endpoint takes signed JWTs; anyone who can reach it can use it\n", addr)
			}
			srv := emulator.New(cfg)
			url, err := srv.Start(addr)
			if err != nil {
				return fmt.Errorf("emulator: %w", err)
			}
			defer srv.Close()
			fmt.Fprintf(e.stdout, "emulator listening on %s\n", url)
			if grpcAddr := c.String("grpc-addr"); grpcAddr != "" {
				storageAddr := c.String("storage-addr")
				for _, a := range []string{grpcAddr, storageAddr} {
					if !loopbackAddr(a) {
						fmt.Fprintf(e.stderr, "batchgpt: warning: %s is not a loopback address: the batch-mode emulator serves "+
							"plaintext gRPC and unsigned storage URLs; anyone who can reach it can use it\n", a)
					}
				}
				bcfg := batchmode.Config{RowsPerSecond: c.Float64("batch-rows-per-second"), BatchSize: c.Int("batch-size"),
					StepDelay: c.Duration("batch-step-delay"), Faults: batchFaults, Authorize: srv.Authorize, Seed: time.Now().UnixNano(),
					Logf: cfg.Logf}
				bsrv := batchmode.New(bcfg)
				target, storage, err := bsrv.Start(grpcAddr, storageAddr)
				if err != nil {
					return fmt.Errorf("emulator: %w", err)
				}
				defer bsrv.Close()
				fmt.Fprintf(e.stdout, "batch-mode emulator: gRPC on %s, storage on %s\n", target, storage)
			}
			<-c.Context.Done()
			fmt.Fprintf(e.stderr, "emulator stopped: %+v\n", srv.Stats())
			return nil
		},
	}
}

// loopbackAddr reports whether a listen address binds loopback only ("" or ":8080" bind every
// interface), or an endpoint is on this machine (the batch backend's plaintext to an emulator).
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
