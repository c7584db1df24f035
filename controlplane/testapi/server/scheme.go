package main

// The scheme: Kubernetes' published (external) types from k8s.io/api, registered a second
// time as their own "internal" version. The real kube-apiserver converts to internal types
// that live in k8s.io/kubernetes, which is not packaged; with the external type doubling as
// the internal one every conversion is a copy, and the generic registry works unchanged.

import (
	"fmt"
	"reflect"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

var (
	// Scheme serves and stores the built-in kinds.
	Scheme = runtime.NewScheme()
	// Codecs encodes and decodes them.
	Codecs = serializer.NewCodecFactory(Scheme)
	// namingScheme holds the external registrations only; the OpenAPI definition namer
	// reads it, so that no definition claims the "__internal" version.
	namingScheme = runtime.NewScheme()

	servedGroupVersions = []schema.GroupVersion{
		corev1.SchemeGroupVersion,
		appsv1.SchemeGroupVersion,
		networkingv1.SchemeGroupVersion,
		rbacv1.SchemeGroupVersion,
		coordinationv1.SchemeGroupVersion,
		discoveryv1.SchemeGroupVersion,
		authorizationv1.SchemeGroupVersion,
	}
	addToScheme = []func(*runtime.Scheme) error{
		corev1.AddToScheme,
		appsv1.AddToScheme,
		networkingv1.AddToScheme,
		rbacv1.AddToScheme,
		coordinationv1.AddToScheme,
		discoveryv1.AddToScheme,
		authorizationv1.AddToScheme,
	}
)

func init() {
	for _, add := range addToScheme {
		if err := add(Scheme); err != nil {
			panic(err)
		}
		if err := add(namingScheme); err != nil {
			panic(err)
		}
	}
	for _, gv := range servedGroupVersions {
		internal := schema.GroupVersion{Group: gv.Group, Version: runtime.APIVersionInternal}
		for kind, typ := range Scheme.KnownTypes(gv) {
			if kind == "WatchEvent" || strings.HasSuffix(kind, "Options") {
				continue
			}
			if Scheme.Recognizes(internal.WithKind(kind)) {
				continue
			}
			obj, ok := newOf(typ)
			if !ok {
				continue
			}
			Scheme.AddKnownTypeWithName(internal.WithKind(kind), obj)
		}
		if err := Scheme.SetVersionPriority(gv); err != nil {
			panic(err)
		}
	}
	// Field selectors: metadata.name and metadata.namespace for every kind, plus the
	// kind-specific ones below (the ones kube-apiserver accepts that a node agent uses).
	for _, r := range resources {
		r := r
		gvk := r.gv.WithKind(r.kind)
		allowed := map[string]bool{"metadata.name": true, "metadata.namespace": r.namespaced}
		for _, f := range r.fieldNames {
			allowed[f] = true
		}
		if err := Scheme.AddFieldLabelConversionFunc(gvk, func(label, value string) (string, string, error) {
			if allowed[label] {
				return label, value, nil
			}
			return "", "", fmt.Errorf("field label not supported: %s", label)
		}); err != nil {
			panic(err)
		}
	}
}

// newOf returns a new, empty object of a registered struct type.
func newOf(typ reflect.Type) (runtime.Object, bool) {
	obj, ok := reflect.New(typ).Interface().(runtime.Object)
	return obj, ok
}
