// sluice-testapi: a Kubernetes API server for sluice's tests, assembled from
// k8s.io/apiserver's generic server (etcd3 storage, watch cache, server-side apply,
// dry-run) and k8s.io/apiextensions-apiserver (CRDs), serving the built-in kinds a node
// agent watches. See ../README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"

	authorizationv1 "k8s.io/api/authorization/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	apiextensionsoptions "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/token/tokenfile"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	discoveryendpoint "k8s.io/apiserver/pkg/endpoints/discovery/aggregated"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	generatedopenapi "sluice.dev/testapi/openapi"
)

type flags struct {
	bindAddress       string
	securePort        int
	etcdServers       []string
	etcdPrefix        string
	certDir           string
	tokenFile         string
	authorizationMode string
}

func main() {
	var f flags
	fs := pflag.NewFlagSet("sluice-testapi", pflag.ExitOnError)
	fs.StringVar(&f.bindAddress, "bind-address", "127.0.0.1", "address to serve HTTPS on")
	fs.IntVar(&f.securePort, "secure-port", 6443, "port to serve HTTPS on")
	fs.StringSliceVar(&f.etcdServers, "etcd-servers", []string{"http://127.0.0.1:2379"}, "etcd endpoints")
	fs.StringVar(&f.etcdPrefix, "etcd-prefix", "/registry", "key prefix in etcd")
	fs.StringVar(&f.certDir, "cert-dir", "", "directory for ca.crt, apiserver.crt and apiserver.key (generated if missing, reused if present)")
	fs.StringVar(&f.tokenFile, "token-file", "", "static bearer tokens, CSV: token,user,uid,\"group1,group2\"")
	fs.StringVar(&f.authorizationMode, "authorization-mode", "AlwaysAllow", "AlwaysAllow or RBAC")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	_ = fs.Parse(os.Args[1:])
	if f.certDir == "" || f.tokenFile == "" {
		fmt.Fprintln(os.Stderr, "sluice-testapi: --cert-dir and --token-file are required")
		os.Exit(2)
	}
	if f.authorizationMode != "AlwaysAllow" && f.authorizationMode != "RBAC" {
		fmt.Fprintf(os.Stderr, "sluice-testapi: --authorization-mode must be AlwaysAllow or RBAC, not %q\n", f.authorizationMode)
		os.Exit(2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		cancel()
		<-sigs
		os.Exit(1)
	}()
	if err := run(ctx, f); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-testapi: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	certFile, keyFile, err := ensureServingCert(f.certDir)
	if err != nil {
		return err
	}

	runOptions := genericoptions.NewServerRunOptions()
	if err := runOptions.Complete(); err != nil {
		return err
	}
	// Requests that a test makes should never wait for a graceful shutdown.
	runOptions.ShutdownDelayDuration = 0
	runOptions.ShutdownWatchTerminationGracePeriod = 0

	etcdOptions := genericoptions.NewEtcdOptions(storagebackend.NewDefaultConfig(f.etcdPrefix,
		Codecs.LegacyCodec(servedGroupVersions...)))
	etcdOptions.StorageConfig.Transport.ServerList = f.etcdServers
	etcdOptions.EnableWatchCache = true

	serving := genericoptions.NewSecureServingOptions()
	serving.BindAddress = net.ParseIP(f.bindAddress)
	if serving.BindAddress == nil {
		return fmt.Errorf("--bind-address %q is not an IP address", f.bindAddress)
	}
	serving.BindPort = f.securePort
	serving.ServerCert.CertKey.CertFile = certFile
	serving.ServerCert.CertKey.KeyFile = keyFile

	cfg := genericapiserver.NewRecommendedConfig(Codecs)
	if err := runOptions.ApplyTo(&cfg.Config); err != nil {
		return err
	}
	cfg.ExternalAddress = net.JoinHostPort(f.bindAddress, fmt.Sprint(f.securePort))
	if err := etcdOptions.ApplyTo(&cfg.Config); err != nil {
		return fmt.Errorf("etcd options: %w", err)
	}
	if err := serving.WithLoopback().ApplyToConfig(&cfg.Config); err != nil {
		return fmt.Errorf("serving on %s:%d: %w", f.bindAddress, f.securePort, err)
	}

	// Authentication: static bearer tokens (plus the loopback token, added by Complete).
	tokens, err := tokenfile.NewCSV(f.tokenFile)
	if err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	cfg.Authentication.Authenticator = group.NewAuthenticatedGroupAdder(bearertoken.New(tokens))

	// Informers over the loopback client: admission, RBAC and the small controllers use them.
	kubeClient, err := kubernetes.NewForConfig(cfg.LoopbackClientConfig)
	if err != nil {
		return err
	}
	cfg.ClientConfig = cfg.LoopbackClientConfig
	cfg.SharedInformerFactory = informers.NewSharedInformerFactory(kubeClient, 10*time.Minute)

	switch f.authorizationMode {
	case "RBAC":
		rbac := newRBACAuthorizer(cfg.SharedInformerFactory)
		cfg.Authorization.Authorizer = rbac
		cfg.RuleResolver = rbac
	default:
		cfg.Authorization.Authorizer = authorizerfactory.NewAlwaysAllowAuthorizer()
		cfg.RuleResolver = authorizerfactory.NewAlwaysAllowAuthorizer()
	}

	// Admission: NamespaceLifecycle (no objects in a missing or terminating namespace; the
	// system namespaces cannot be deleted), as in kube-apiserver.
	nsLifecycle, err := lifecycle.NewLifecycle(sets.New(metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic))
	if err != nil {
		return err
	}
	nsLifecycle.SetExternalKubeInformerFactory(cfg.SharedInformerFactory)
	nsLifecycle.SetExternalKubeClientSet(kubeClient)
	if err := nsLifecycle.ValidateInitialization(); err != nil {
		return err
	}
	cfg.AdmissionControl = admission.NewChainHandler(nsLifecycle)

	// OpenAPI: server-side apply of built-in kinds needs their schemas.
	namer := openapinamer.NewDefinitionNamer(namingScheme, apiextensionsapiserver.Scheme)
	cfg.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(generatedopenapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIConfig.Info.Title = "sluice-testapi"
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(generatedopenapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIV3Config.Info.Title = "sluice-testapi"

	// One aggregated-discovery manager for both servers, so /apis (v2 discovery) lists CRD
	// groups next to the built-in ones.
	cfg.AggregatedDiscoveryGroupManager = discoveryendpoint.NewResourceManager("apis")

	// The apiextensions server: CRDs and custom resources, with the delegation chain of
	// kube-apiserver (built-in kinds first, then CRDs, then 404).
	extGeneric := *cfg
	extGeneric.PostStartHooks = map[string]genericapiserver.PostStartHookConfigEntry{}
	extGeneric.RESTOptionsGetter = nil
	extGeneric.Serializer = apiextensionsapiserver.Codecs
	extEtcd := *etcdOptions
	extEtcd.StorageConfig.Codec = apiextensionsapiserver.Codecs.LegacyCodec(apiextensionsv1.SchemeGroupVersion)
	extEtcd.SkipHealthEndpoints = true
	if err := extEtcd.ApplyTo(&extGeneric.Config); err != nil {
		return err
	}
	extGeneric.MergedResourceConfig = apiextensionsapiserver.DefaultAPIResourceConfigSource()
	extConfig := &apiextensionsapiserver.Config{
		GenericConfig: &extGeneric,
		ExtraConfig: apiextensionsapiserver.ExtraConfig{
			CRDRESTOptionsGetter: apiextensionsoptions.NewCRDRESTOptionsGetter(*etcdOptions, cfg.ResourceTransformers, cfg.StorageObjectCountTracker),
			MasterCount:          1,
			ServiceResolver:      noServiceResolver{},
			AuthResolverWrapper:  webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, cfg.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}
	ext, err := extConfig.Complete().New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return fmt.Errorf("apiextensions server: %w", err)
	}

	cfg.AddPostStartHookOrDie("sluice-bootstrap", func(hookCtx genericapiserver.PostStartHookContext) error {
		go runControllers(hookCtx, kubeClient, cfg.SharedInformerFactory, ext.Informers, f.authorizationMode == "RBAC")
		return nil
	})

	server, err := cfg.Complete().New("sluice-testapi", ext.GenericAPIServer)
	if err != nil {
		return err
	}
	extra := map[schema.GroupVersion]map[string]rest.Storage{
		authorizationv1.SchemeGroupVersion: reviewStorage(cfg.Authorization.Authorizer),
	}
	if err := installBuiltins(server, cfg.RESTOptionsGetter, extra); err != nil {
		return err
	}
	rootDiscovery = server.DiscoveryGroupManager
	klog.Infof("sluice-testapi serving on https://%s (etcd %s, authorization %s)",
		cfg.ExternalAddress, strings.Join(f.etcdServers, ","), f.authorizationMode)
	return server.PrepareRun().RunWithContext(ctx)
}

// installBuiltins installs every built-in resource: core/v1 under /api, the rest under /apis.
func installBuiltins(server *genericapiserver.GenericAPIServer, getter generic.RESTOptionsGetter, storage map[schema.GroupVersion]map[string]rest.Storage) error {
	for _, r := range resources {
		main, status, err := newStorage(r, getter)
		if err != nil {
			return fmt.Errorf("storage for %s: %w", r.groupResource(), err)
		}
		if storage[r.gv] == nil {
			storage[r.gv] = map[string]rest.Storage{}
		}
		storage[r.gv][r.plural] = main
		if status != nil {
			storage[r.gv][r.plural+"/status"] = status
		}
	}
	var groups []*genericapiserver.APIGroupInfo
	for _, gv := range servedGroupVersions {
		info := genericapiserver.NewDefaultAPIGroupInfo(gv.Group, Scheme, metav1.ParameterCodec, Codecs)
		info.VersionedResourcesStorageMap[gv.Version] = storage[gv]
		if gv.Group == "" {
			if err := server.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, &info); err != nil {
				return fmt.Errorf("installing core/v1: %w", err)
			}
			continue
		}
		groups = append(groups, &info)
	}
	if err := server.InstallAPIGroups(groups...); err != nil {
		return fmt.Errorf("installing API groups: %w", err)
	}
	return nil
}
