package controlplane

// The only file that touches upstream component packages: each function
// parses flags into the upstream options, completes them and runs the
// component until ctx ends, as the upstream command would, minus the
// process-wide signal handling that cannot be installed three times in one
// process.

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	encryptionconfigcontroller "k8s.io/apiserver/pkg/server/options/encryptionconfig/controller"
	"k8s.io/client-go/rest"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/configz"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	cmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	cmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// encryptionReloadInterval is how often kube-apiserver checks the
// encryption config file for changes (upstream: a minute), so that
// `cloudless secrets-encrypt rotate` takes seconds.
const encryptionReloadInterval = 5 * time.Second

func parse(name string, sets cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	for _, f := range sets.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s flags: %w", name, err)
	}
	return nil
}

// exited is how a component that runs until ctx ends stopped: its error
// named, or that it stopped without one (the server ignores either once
// ctx has ended).
func exited(component string, err error) error {
	if err == nil {
		return fmt.Errorf("%s stopped", component)
	}
	return fmt.Errorf("%s: %w", component, err)
}

func runAPIServer(ctx context.Context, args []string, ndots int, lbNodePorts bool) error {
	s := apiserveroptions.NewServerRunOptions()
	registerDNSDefaults(s.Admission.GenericAdmission, ndots)
	registerServiceDefaults(lbNodePorts)
	// Ours only (not in ComponentArgs, which upstream binaries also run).
	args = append(args, "--enable-admission-plugins="+DNSDefaultsPlugin)
	if err := parse("kube-apiserver", s.Flags(), args); err != nil {
		return err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	encryptionconfigcontroller.EncryptionConfigFileChangePollDuration = encryptionReloadInterval
	completed, err := s.Complete(ctx)
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return fmt.Errorf("kube-apiserver: %v", errs)
	}
	return apiserverapp.Run(ctx, completed)
}

// runControllerManager runs kube-controller-manager while this process
// holds its lease (see whileLeading), built afresh for each term: a
// lost lease ends the term instead of the process.
func runControllerManager(ctx context.Context, args []string) error {
	s, err := controllerManagerOptions(args)
	if err != nil {
		return err
	}
	return whileLeading(ctx, "kube-controller-manager", "", s.Generic.LeaderElection, s.Generic.ClientConnection.Kubeconfig, func(ctx context.Context) error {
		s, err := controllerManagerOptions(args)
		if err != nil {
			return err
		}
		s.Generic.LeaderElection.LeaderElect = false // elected above
		c, err := s.Config(ctx, cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases())
		if err != nil {
			return fmt.Errorf("kube-controller-manager: %w", err)
		}
		configz.Delete(cmapp.ConfigzName) // registered by the previous term
		return cmapp.Run(ctx, c.Complete())
	})
}

func controllerManagerOptions(args []string) (*cmoptions.KubeControllerManagerOptions, error) {
	s, err := cmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	if err := parse("kube-controller-manager", s.Flags(cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases()), args); err != nil {
		return nil, err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	return s, nil
}

// schedulerConfigzName is the name kube-scheduler registers its
// /configz under (a literal upstream).
const schedulerConfigzName = "componentconfig"

// runScheduler runs kube-scheduler while this process holds its lease,
// as runControllerManager. The election takes the --leader-elect* flags;
// a --config file's leaderElection section is not read.
func runScheduler(ctx context.Context, args []string) error {
	opts, err := schedulerOptions(args)
	if err != nil {
		return err
	}
	return whileLeading(ctx, "kube-scheduler", "", *opts.LeaderElection, opts.Deprecated.Kubeconfig, func(ctx context.Context) error {
		opts, err := schedulerOptions(args)
		if err != nil {
			return err
		}
		// Elected above; Set marks the flag given, so it also overrides
		// a --config file.
		if err := opts.Flags.FlagSet("leader election").Set("leader-elect", "false"); err != nil {
			return err
		}
		cc, sched, err := schedapp.Setup(ctx, opts)
		if err != nil {
			return fmt.Errorf("kube-scheduler: %w", err)
		}
		configz.Delete(schedulerConfigzName) // registered by the previous term
		return schedapp.Run(ctx, cc, sched)
	})
}

func schedulerOptions(args []string) (*schedoptions.Options, error) {
	opts := schedoptions.NewOptions()
	if err := parse("kube-scheduler", *opts.Flags, args); err != nil {
		return nil, err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	return opts, nil
}
