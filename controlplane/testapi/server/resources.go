package main

// The served built-in resources and their kind-specific behaviour (the parts of
// kube-apiserver's per-kind strategies that a controller can observe).

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// namespaceNameLabel is set on every namespace, as kube-apiserver does (NetworkPolicy
// namespaceSelectors rely on it).
const namespaceNameLabel = "kubernetes.io/metadata.name"

var core = corev1.SchemeGroupVersion

var resources = []*resourceDef{
	{gv: core, plural: "namespaces", singular: "namespace", kind: "Namespace", status: true,
		shortNames: []string{"ns"}, fieldNames: []string{"status.phase"},
		fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"status.phase": string(obj.(*corev1.Namespace).Status.Phase)}
		},
		prepareCreate: func(obj runtime.Object) {
			ns := obj.(*corev1.Namespace)
			ns.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
			setNamespaceLabel(ns)
		},
		prepareUpdate: func(obj, _ runtime.Object) { setNamespaceLabel(obj.(*corev1.Namespace)) },
		validate: func(obj runtime.Object) field.ErrorList {
			var errs field.ErrorList
			for _, msg := range validation.IsDNS1123Label(obj.(*corev1.Namespace).Name) {
				errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), obj.(*corev1.Namespace).Name, msg))
			}
			return errs
		},
	},
	{gv: core, plural: "pods", singular: "pod", kind: "Pod", namespaced: true, status: true,
		resetStatusOnCreate: true, shortNames: []string{"po"}, categories: []string{"all"},
		fieldNames: []string{"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
			"spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
			"status.nominatedNodeName"},
		fields:         podFields,
		prepareCreate:  podDefaults,
		validate:       validatePod,
		validateStatus: validatePodStatus,
		gracefulDelete: podGracefulDelete,
	},
	{gv: core, plural: "serviceaccounts", singular: "serviceaccount", kind: "ServiceAccount",
		namespaced: true, shortNames: []string{"sa"}},
	{gv: core, plural: "nodes", singular: "node", kind: "Node", status: true,
		shortNames: []string{"no"}, fieldNames: []string{"spec.unschedulable"},
		fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"spec.unschedulable": strconv.FormatBool(obj.(*corev1.Node).Spec.Unschedulable)}
		},
	},
	{gv: core, plural: "services", singular: "service", kind: "Service", namespaced: true,
		status: true, resetStatusOnCreate: true, shortNames: []string{"svc"},
		categories: []string{"all"}},
	{gv: core, plural: "endpoints", singular: "endpoints", kind: "Endpoints", namespaced: true,
		shortNames: []string{"ep"}},
	{gv: core, plural: "configmaps", singular: "configmap", kind: "ConfigMap", namespaced: true,
		shortNames: []string{"cm"}},
	{gv: core, plural: "secrets", singular: "secret", kind: "Secret", namespaced: true,
		fieldNames: []string{"type"},
		fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"type": string(obj.(*corev1.Secret).Type)}
		},
	},
	{gv: core, plural: "events", singular: "event", kind: "Event", namespaced: true,
		shortNames: []string{"ev"},
		fieldNames: []string{"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
			"involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
			"involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
		fields: func(obj runtime.Object) fields.Set {
			e := obj.(*corev1.Event)
			source := e.Source.Component
			if source == "" {
				source = e.ReportingController
			}
			return fields.Set{
				"involvedObject.kind":            e.InvolvedObject.Kind,
				"involvedObject.namespace":       e.InvolvedObject.Namespace,
				"involvedObject.name":            e.InvolvedObject.Name,
				"involvedObject.uid":             string(e.InvolvedObject.UID),
				"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
				"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
				"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
				"reason":                         e.Reason,
				"reportingComponent":             e.ReportingController,
				"source":                         source,
				"type":                           e.Type,
			}
		},
	},
	{gv: networkingv1.SchemeGroupVersion, plural: "networkpolicies", singular: "networkpolicy",
		kind: "NetworkPolicy", namespaced: true, shortNames: []string{"netpol"}},
	{gv: rbacv1.SchemeGroupVersion, plural: "roles", singular: "role", kind: "Role", namespaced: true},
	{gv: rbacv1.SchemeGroupVersion, plural: "rolebindings", singular: "rolebinding", kind: "RoleBinding",
		namespaced: true},
	{gv: rbacv1.SchemeGroupVersion, plural: "clusterroles", singular: "clusterrole", kind: "ClusterRole"},
	{gv: rbacv1.SchemeGroupVersion, plural: "clusterrolebindings", singular: "clusterrolebinding",
		kind: "ClusterRoleBinding"},
	{gv: coordinationv1.SchemeGroupVersion, plural: "leases", singular: "lease", kind: "Lease",
		namespaced: true},
	{gv: discoveryv1.SchemeGroupVersion, plural: "endpointslices", singular: "endpointslice",
		kind: "EndpointSlice", namespaced: true},
}

func setNamespaceLabel(ns *corev1.Namespace) {
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[namespaceNameLabel] = ns.Name
}

func podFields(obj runtime.Object) fields.Set {
	p := obj.(*corev1.Pod)
	return fields.Set{
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         strconv.FormatBool(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             p.Status.PodIP,
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

// podDefaults applies the defaults (and the ServiceAccount admission's choice of
// "default") that kube-apiserver gives every pod, and the Pending phase.
func podDefaults(obj runtime.Object) {
	p := obj.(*corev1.Pod)
	p.Status = corev1.PodStatus{Phase: corev1.PodPending}
	s := &p.Spec
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	if s.TerminationGracePeriodSeconds == nil {
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		s.TerminationGracePeriodSeconds = &grace
	}
	if s.ServiceAccountName == "" {
		s.ServiceAccountName = s.DeprecatedServiceAccount
	}
	if s.ServiceAccountName == "" {
		s.ServiceAccountName = "default"
	}
	s.DeprecatedServiceAccount = s.ServiceAccountName
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	for _, list := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range list {
			c := &list[i]
			if c.TerminationMessagePath == "" {
				c.TerminationMessagePath = corev1.TerminationMessagePathDefault
			}
			if c.TerminationMessagePolicy == "" {
				c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
			}
			if c.ImagePullPolicy == "" {
				c.ImagePullPolicy = corev1.PullIfNotPresent
				if !strings.Contains(c.Image[strings.LastIndex(c.Image, "/")+1:], ":") || strings.HasSuffix(c.Image, ":latest") {
					c.ImagePullPolicy = corev1.PullAlways
				}
			}
			for j := range c.Ports {
				if c.Ports[j].Protocol == "" {
					c.Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	}
}

func validatePod(obj runtime.Object) field.ErrorList {
	p := obj.(*corev1.Pod)
	var errs field.ErrorList
	path := field.NewPath("spec", "containers")
	if len(p.Spec.Containers) == 0 {
		errs = append(errs, field.Required(path, ""))
	}
	seen := sets.New[string]()
	for i, c := range append(append([]corev1.Container{}, p.Spec.Containers...), p.Spec.InitContainers...) {
		cp := path.Index(i)
		if i >= len(p.Spec.Containers) {
			cp = field.NewPath("spec", "initContainers").Index(i - len(p.Spec.Containers))
		}
		if c.Name == "" {
			errs = append(errs, field.Required(cp.Child("name"), ""))
		} else if seen.Has(c.Name) {
			errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
		}
		seen.Insert(c.Name)
		if strings.TrimSpace(c.Image) == "" {
			errs = append(errs, field.Required(cp.Child("image"), ""))
		}
	}
	return errs
}

// validatePodStatus: status.podIPs[0] must equal status.podIP, and both must be IPs.
func validatePodStatus(obj runtime.Object) field.ErrorList {
	p := obj.(*corev1.Pod)
	var errs field.ErrorList
	if p.Status.PodIP != "" && net.ParseIP(p.Status.PodIP) == nil {
		errs = append(errs, field.Invalid(field.NewPath("status", "podIP"), p.Status.PodIP, "must be a valid IP address"))
	}
	for i, ip := range p.Status.PodIPs {
		if net.ParseIP(ip.IP) == nil {
			errs = append(errs, field.Invalid(field.NewPath("status", "podIPs").Index(i).Child("ip"), ip.IP, "must be a valid IP address"))
		}
	}
	for i, ip := range p.Status.PodIPs {
		if i == 0 && p.Status.PodIP != "" && ip.IP != p.Status.PodIP {
			errs = append(errs, field.Invalid(field.NewPath("status", "podIPs").Index(0).Child("ip"), ip.IP,
				fmt.Sprintf("must match status.podIP %q", p.Status.PodIP)))
		}
	}
	return errs
}

// podGracefulDelete is kube-apiserver's rule: a pod bound to a node is deleted gracefully
// (its deletionTimestamp set, then removed when a kubelet, or a test acting as one, deletes
// it with gracePeriodSeconds=0); an unscheduled or finished pod is deleted at once.
func podGracefulDelete(obj runtime.Object, options *metav1.DeleteOptions) bool {
	if options == nil {
		return false
	}
	p := obj.(*corev1.Pod)
	period := int64(0)
	if options.GracePeriodSeconds != nil {
		period = *options.GracePeriodSeconds
	} else if p.Spec.TerminationGracePeriodSeconds != nil {
		period = *p.Spec.TerminationGracePeriodSeconds
	}
	if p.Spec.NodeName == "" || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		period = 0
	}
	if period < 0 {
		period = 1
	}
	options.GracePeriodSeconds = &period
	return true
}
