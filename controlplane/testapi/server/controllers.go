package main

// The few controllers of a real control plane whose effects a client can see, in their
// simplest form: the system namespaces exist, every namespace gets a "default" service
// account, a deleted namespace's contents are deleted, the bootstrap RBAC roles exist, and
// the legacy /apis list names the CRD groups (the aggregator does that in kube-apiserver).

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsinformers "k8s.io/apiextensions-apiserver/pkg/client/informers/externalversions"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// rootDiscovery is the outer server's legacy /apis list.
var rootDiscovery discovery.GroupManager

func runControllers(ctx genericapiserver.PostStartHookContext, client kubernetes.Interface,
	kubeInformers informers.SharedInformerFactory, extInformers apiextensionsinformers.SharedInformerFactory, rbac bool) {
	bootstrap(ctx, client)

	dyn, err := dynamic.NewForConfig(ctx.LoopbackClientConfig)
	if err != nil {
		klog.Errorf("dynamic client: %v", err)
		return
	}
	nsInformer := kubeInformers.Core().V1().Namespaces().Informer()
	_, _ = nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			if ns, ok := obj.(*corev1.Namespace); ok {
				go ensureDefaultServiceAccount(ctx, client, ns.Name)
			}
		},
		DeleteFunc: func(obj interface{}) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if ns, ok := obj.(*corev1.Namespace); ok {
				go deleteNamespaceContent(ctx, client, dyn, ns.Name)
			}
		},
	})

	rootDiscovery.AddGroup(discoveryGroup(apiextensionsv1.GroupName, []string{"v1"}))
	crds := extInformers.Apiextensions().V1().CustomResourceDefinitions()
	var mu sync.Mutex
	listed := sets.New[string]()
	resync := func() {
		mu.Lock()
		defer mu.Unlock()
		all, err := crds.Lister().List(labels.Everything())
		if err != nil {
			return
		}
		versions := map[string]sets.Set[string]{}
		for _, crd := range all {
			for _, v := range crd.Spec.Versions {
				if v.Served {
					if versions[crd.Spec.Group] == nil {
						versions[crd.Spec.Group] = sets.New[string]()
					}
					versions[crd.Spec.Group].Insert(v.Name)
				}
			}
		}
		for g, vs := range versions {
			rootDiscovery.AddGroup(discoveryGroup(g, sets.List(vs)))
		}
		for g := range listed {
			if _, ok := versions[g]; !ok {
				rootDiscovery.RemoveGroup(g)
			}
		}
		listed = sets.KeySet(versions)
	}
	_, _ = crds.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { resync() },
		UpdateFunc: func(interface{}, interface{}) { resync() },
		DeleteFunc: func(interface{}) { resync() },
	})
}

// discoveryGroup lists a group's versions, preferred (kube's version order) first.
func discoveryGroup(name string, versions []string) metav1.APIGroup {
	sort.Slice(versions, func(i, j int) bool {
		return version.CompareKubeAwareVersionStrings(versions[i], versions[j]) > 0
	})
	g := metav1.APIGroup{Name: name}
	for _, v := range versions {
		g.Versions = append(g.Versions, metav1.GroupVersionForDiscovery{
			GroupVersion: schema.GroupVersion{Group: name, Version: v}.String(), Version: v})
	}
	if len(g.Versions) > 0 {
		g.PreferredVersion = g.Versions[0]
	}
	return g
}

// bootstrap creates the system namespaces and the bootstrap RBAC policy, retrying until the
// server answers.
func bootstrap(ctx context.Context, client kubernetes.Interface) {
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, name := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease} {
			_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				klog.V(2).Infof("bootstrap: namespace %s: %v", name, err)
				return false, nil
			}
		}
		for _, role := range bootstrapClusterRoles() {
			_, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				klog.V(2).Infof("bootstrap: clusterrole %s: %v", role.Name, err)
				return false, nil
			}
		}
		for _, binding := range bootstrapClusterRoleBindings() {
			_, err := client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				klog.V(2).Infof("bootstrap: clusterrolebinding %s: %v", binding.Name, err)
				return false, nil
			}
		}
		return true, nil
	})
}

func ensureDefaultServiceAccount(ctx context.Context, client kubernetes.Interface, ns string) {
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			// Forbidden: the namespace is gone again (NamespaceLifecycle).
			return true, nil
		}
		return false, nil
	})
}

// deleteNamespaceContent deletes every namespaced object left in a deleted namespace
// (custom resources included), pods without a grace period.
func deleteNamespaceContent(ctx context.Context, client kubernetes.Interface, dyn dynamic.Interface, ns string) {
	_ = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		lists, err := client.Discovery().ServerPreferredNamespacedResources()
		if err != nil && len(lists) == 0 {
			return false, nil
		}
		zero := int64(0)
		done := true
		for _, list := range lists {
			gv, err := schema.ParseGroupVersion(list.GroupVersion)
			if err != nil {
				continue
			}
			for _, r := range list.APIResources {
				if !sets.New(r.Verbs...).Has("deletecollection") {
					continue
				}
				err := dyn.Resource(gv.WithResource(r.Name)).Namespace(ns).DeleteCollection(ctx,
					metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
				if err != nil && !apierrors.IsNotFound(err) {
					klog.V(2).Infof("namespace %s: deleting %s: %v", ns, r.Name, err)
					done = false
				}
			}
		}
		return done, nil
	})
}

func bootstrapClusterRoles() []*rbacv1.ClusterRole {
	role := func(name string, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
		return &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}},
			Rules:      rules,
		}
	}
	return []*rbacv1.ClusterRole{
		role("cluster-admin",
			rbacv1.PolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}},
			rbacv1.PolicyRule{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}),
		role("system:discovery", rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{
			"/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
			"/readyz", "/version", "/version/"}}),
		role("system:basic-user", rbacv1.PolicyRule{Verbs: []string{"create"},
			APIGroups: []string{"authorization.k8s.io"},
			Resources: []string{"selfsubjectaccessreviews", "selfsubjectrulesreviews"}}),
		role("system:public-info-viewer", rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{
			"/healthz", "/livez", "/readyz", "/version", "/version/"}}),
	}
}

func bootstrapClusterRoleBindings() []*rbacv1.ClusterRoleBinding {
	binding := func(name string, groups ...string) *rbacv1.ClusterRoleBinding {
		b := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		}
		for _, g := range groups {
			b.Subjects = append(b.Subjects, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: g})
		}
		return b
	}
	return []*rbacv1.ClusterRoleBinding{
		binding("cluster-admin", "system:masters"),
		binding("system:discovery", "system:authenticated"),
		binding("system:basic-user", "system:authenticated"),
		binding("system:public-info-viewer", "system:authenticated", "system:unauthenticated"),
	}
}

// noServiceResolver: conversion webhooks that name a Service are not supported.
type noServiceResolver struct{}

func (noServiceResolver) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	return nil, fmt.Errorf("service %s/%s: services are not resolvable in sluice-testapi; use a URL webhook", namespace, name)
}
