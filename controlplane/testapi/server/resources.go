package main

// The served built-in resources and their kind-specific behaviour (the parts of
// kube-apiserver's per-kind strategies that a controller can observe).

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
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
	{gv: appsv1.SchemeGroupVersion, plural: "daemonsets", singular: "daemonset", kind: "DaemonSet",
		namespaced: true, status: true, resetStatusOnCreate: true, shortNames: []string{"ds"},
		categories:     []string{"all"},
		prepareCreate:  func(obj runtime.Object) { daemonSetDefaults(obj.(*appsv1.DaemonSet)) },
		prepareUpdate:  func(obj, _ runtime.Object) { daemonSetDefaults(obj.(*appsv1.DaemonSet)) },
		validate:       validateDaemonSet,
		validateUpdate: validateDaemonSetUpdate,
	},
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
	podSpecDefaults(&p.Spec)
	if p.Spec.ServiceAccountName == "" {
		p.Spec.ServiceAccountName = "default"
		p.Spec.DeprecatedServiceAccount = "default"
	}
}

// podSpecDefaults applies kube-apiserver's pod spec defaults (pods and pod templates).
func podSpecDefaults(s *corev1.PodSpec) {
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
	// The deprecated serviceAccount field mirrors serviceAccountName (v1 conversion).
	if s.ServiceAccountName == "" {
		s.ServiceAccountName = s.DeprecatedServiceAccount
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
	return validatePodSpec(&obj.(*corev1.Pod).Spec, field.NewPath("spec"))
}

// validatePodSpec: at least one container; every container (init containers included) has
// a unique name and an image.
func validatePodSpec(s *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(path.Child("containers"), ""))
	}
	seen := sets.New[string]()
	for i, c := range append(append([]corev1.Container{}, s.Containers...), s.InitContainers...) {
		cp := path.Child("containers").Index(i)
		if i >= len(s.Containers) {
			cp = path.Child("initContainers").Index(i - len(s.Containers))
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

// daemonSetDefaults applies kube-apiserver's DaemonSet defaults: a RollingUpdate strategy
// (maxUnavailable 1, maxSurge 0), revisionHistoryLimit 10, and the pod template's defaults.
func daemonSetDefaults(ds *appsv1.DaemonSet) {
	s := &ds.Spec
	if s.UpdateStrategy.Type == "" {
		s.UpdateStrategy.Type = appsv1.RollingUpdateDaemonSetStrategyType
	}
	if s.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		if s.UpdateStrategy.RollingUpdate == nil {
			s.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
		}
		ru := s.UpdateStrategy.RollingUpdate
		if ru.MaxUnavailable == nil {
			one := intstr.FromInt32(1)
			ru.MaxUnavailable = &one
		}
		if ru.MaxSurge == nil {
			zero := intstr.FromInt32(0)
			ru.MaxSurge = &zero
		}
	}
	if s.RevisionHistoryLimit == nil {
		limit := int32(10)
		s.RevisionHistoryLimit = &limit
	}
	podSpecDefaults(&s.Template.Spec)
}

// validateDaemonSet is the part of kube-apiserver's DaemonSet validation that a manifest
// gets wrong most often: a selector that is set, not empty and matches the template's
// labels; a valid pod template that restarts Always; a valid update strategy.
func validateDaemonSet(obj runtime.Object) field.ErrorList {
	ds := obj.(*appsv1.DaemonSet)
	s := &ds.Spec
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if s.Selector == nil {
		errs = append(errs, field.Required(spec.Child("selector"), ""))
	} else {
		selErrs := metav1validation.ValidateLabelSelector(s.Selector, metav1validation.LabelSelectorValidationOptions{}, spec.Child("selector"))
		errs = append(errs, selErrs...)
		if selector, err := metav1.LabelSelectorAsSelector(s.Selector); len(selErrs) == 0 && err == nil {
			if selector.Empty() {
				errs = append(errs, field.Invalid(spec.Child("selector"), s.Selector, "empty selector is invalid for daemonset"))
			} else if !selector.Matches(labels.Set(s.Template.Labels)) {
				errs = append(errs, field.Invalid(spec.Child("template", "metadata", "labels"), s.Template.Labels,
					"`selector` does not match template `labels`"))
			}
		}
	}
	tmpl := spec.Child("template", "spec")
	errs = append(errs, validatePodSpec(&s.Template.Spec, tmpl)...)
	if p := s.Template.Spec.RestartPolicy; p != corev1.RestartPolicyAlways {
		errs = append(errs, field.NotSupported(tmpl.Child("restartPolicy"), p, []corev1.RestartPolicy{corev1.RestartPolicyAlways}))
	}
	if s.Template.Spec.ActiveDeadlineSeconds != nil {
		errs = append(errs, field.Invalid(tmpl.Child("activeDeadlineSeconds"), *s.Template.Spec.ActiveDeadlineSeconds,
			"activeDeadlineSeconds in DaemonSet is not Supported"))
	}
	if s.MinReadySeconds < 0 {
		errs = append(errs, field.Invalid(spec.Child("minReadySeconds"), s.MinReadySeconds, "must be greater than or equal to 0"))
	}
	if s.RevisionHistoryLimit != nil && *s.RevisionHistoryLimit < 0 {
		errs = append(errs, field.Invalid(spec.Child("revisionHistoryLimit"), *s.RevisionHistoryLimit, "must be greater than or equal to 0"))
	}
	return append(errs, validateDaemonSetUpdateStrategy(&s.UpdateStrategy, spec.Child("updateStrategy"))...)
}

func validateDaemonSetUpdateStrategy(st *appsv1.DaemonSetUpdateStrategy, path *field.Path) field.ErrorList {
	switch st.Type {
	case appsv1.OnDeleteDaemonSetStrategyType:
		return nil
	case appsv1.RollingUpdateDaemonSetStrategyType:
		if st.RollingUpdate == nil {
			return field.ErrorList{field.Required(path.Child("rollingUpdate"), "")}
		}
		rp := path.Child("rollingUpdate")
		unavailable, errs := intOrPercent(st.RollingUpdate.MaxUnavailable, rp.Child("maxUnavailable"))
		surge, surgeErrs := intOrPercent(st.RollingUpdate.MaxSurge, rp.Child("maxSurge"))
		errs = append(errs, surgeErrs...)
		if len(errs) == 0 && unavailable == 0 && surge == 0 {
			errs = append(errs, field.Invalid(rp.Child("maxUnavailable"), st.RollingUpdate.MaxUnavailable.String(),
				"may not be 0 when `maxSurge` is 0"))
		}
		return errs
	default:
		return field.ErrorList{field.NotSupported(path.Child("type"), st.Type, []appsv1.DaemonSetUpdateStrategyType{
			appsv1.RollingUpdateDaemonSetStrategyType, appsv1.OnDeleteDaemonSetStrategyType})}
	}
}

var percentRE = regexp.MustCompile(`^([0-9]+)%$`)

// intOrPercent checks a count or a percentage (0 to 100%) and returns its number (0 if nil).
func intOrPercent(v *intstr.IntOrString, path *field.Path) (int, field.ErrorList) {
	if v == nil {
		return 0, nil
	}
	if v.Type == intstr.Int {
		if v.IntVal < 0 {
			return 0, field.ErrorList{field.Invalid(path, v.IntVal, "must be greater than or equal to 0")}
		}
		return int(v.IntVal), nil
	}
	m := percentRE.FindStringSubmatch(v.StrVal)
	if m == nil {
		return 0, field.ErrorList{field.Invalid(path, v.StrVal, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")}
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n > 100 {
		return 0, field.ErrorList{field.Invalid(path, v.StrVal, "must not be greater than 100%")}
	}
	return n, nil
}

// validateDaemonSetUpdate: the selector cannot change (the pods it selects would be orphaned).
func validateDaemonSetUpdate(obj, old runtime.Object) field.ErrorList {
	ds, oldDS := obj.(*appsv1.DaemonSet), old.(*appsv1.DaemonSet)
	if !equality.Semantic.DeepEqual(ds.Spec.Selector, oldDS.Spec.Selector) {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "selector"), ds.Spec.Selector, "field is immutable")}
	}
	return nil
}
