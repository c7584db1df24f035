package main

// RBAC authorization (--authorization-mode=RBAC): kube-apiserver's rules, evaluated over
// the rbac.authorization.k8s.io/v1 objects this server stores. system:masters may do
// anything. ClusterRole aggregation is evaluated when a role is read (one level deep).
// Not implemented: the escalation checks on creating roles and bindings.

import (
	"context"
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/informers"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
)

type rbacAuthorizer struct {
	roles               rbaclisters.RoleLister
	roleBindings        rbaclisters.RoleBindingLister
	clusterRoles        rbaclisters.ClusterRoleLister
	clusterRoleBindings rbaclisters.ClusterRoleBindingLister
}

func newRBACAuthorizer(f informers.SharedInformerFactory) *rbacAuthorizer {
	r := f.Rbac().V1()
	// Asking for the informers registers them before the factory starts.
	_ = r.Roles().Informer()
	_ = r.RoleBindings().Informer()
	_ = r.ClusterRoles().Informer()
	_ = r.ClusterRoleBindings().Informer()
	return &rbacAuthorizer{
		roles:               r.Roles().Lister(),
		roleBindings:        r.RoleBindings().Lister(),
		clusterRoles:        r.ClusterRoles().Lister(),
		clusterRoleBindings: r.ClusterRoleBindings().Lister(),
	}
}

func (a *rbacAuthorizer) Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	u := attrs.GetUser()
	if u == nil {
		return authorizer.DecisionNoOpinion, "no user", nil
	}
	for _, g := range u.GetGroups() {
		if g == user.SystemPrivilegedGroup {
			return authorizer.DecisionAllow, "system:masters", nil
		}
	}
	allowed := false
	reason := ""
	a.visitRules(u, attrs.GetNamespace(), func(source string, rule *rbacv1.PolicyRule) bool {
		if ruleAllows(attrs, rule) {
			allowed = true
			reason = "RBAC: allowed by " + source
			return false
		}
		return true
	})
	if allowed {
		return authorizer.DecisionAllow, reason, nil
	}
	return authorizer.DecisionNoOpinion, fmt.Sprintf("RBAC: no rule allows user %q to %s", u.GetName(), describe(attrs)), nil
}

func describe(attrs authorizer.Attributes) string {
	if !attrs.IsResourceRequest() {
		return attrs.GetVerb() + " " + attrs.GetPath()
	}
	res := attrs.GetResource()
	if attrs.GetSubresource() != "" {
		res += "/" + attrs.GetSubresource()
	}
	s := fmt.Sprintf("%s %s.%s", attrs.GetVerb(), res, attrs.GetAPIGroup())
	if attrs.GetNamespace() != "" {
		s += " in namespace " + attrs.GetNamespace()
	}
	return s
}

// visitRules calls visit for each rule that applies to u in namespace ns (cluster-wide
// rules always), until visit returns false.
func (a *rbacAuthorizer) visitRules(u user.Info, ns string, visit func(source string, rule *rbacv1.PolicyRule) bool) {
	crbs, _ := a.clusterRoleBindings.List(labels.Everything())
	for _, b := range crbs {
		if !appliesTo(u, b.Subjects, "") {
			continue
		}
		for _, rule := range a.clusterRoleRules(b.RoleRef.Name) {
			rule := rule
			if !visit("ClusterRoleBinding "+b.Name, &rule) {
				return
			}
		}
	}
	if ns == "" {
		return
	}
	rbs, _ := a.roleBindings.RoleBindings(ns).List(labels.Everything())
	for _, b := range rbs {
		if !appliesTo(u, b.Subjects, ns) {
			continue
		}
		var rules []rbacv1.PolicyRule
		switch b.RoleRef.Kind {
		case "ClusterRole":
			rules = a.clusterRoleRules(b.RoleRef.Name)
		case "Role":
			if role, err := a.roles.Roles(ns).Get(b.RoleRef.Name); err == nil {
				rules = role.Rules
			}
		}
		for _, rule := range rules {
			rule := rule
			if !visit("RoleBinding "+ns+"/"+b.Name, &rule) {
				return
			}
		}
	}
}

func (a *rbacAuthorizer) clusterRoleRules(name string) []rbacv1.PolicyRule {
	role, err := a.clusterRoles.Get(name)
	if err != nil {
		return nil
	}
	rules := append([]rbacv1.PolicyRule{}, role.Rules...)
	if role.AggregationRule != nil {
		all, _ := a.clusterRoles.List(labels.Everything())
		for _, sel := range role.AggregationRule.ClusterRoleSelectors {
			s, err := metav1.LabelSelectorAsSelector(&sel)
			if err != nil {
				continue
			}
			for _, other := range all {
				if other.Name != role.Name && s.Matches(labels.Set(other.Labels)) {
					rules = append(rules, other.Rules...)
				}
			}
		}
	}
	return rules
}

func appliesTo(u user.Info, subjects []rbacv1.Subject, bindingNamespace string) bool {
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			if u.GetName() == s.Name {
				return true
			}
		case rbacv1.GroupKind:
			for _, g := range u.GetGroups() {
				if g == s.Name {
					return true
				}
			}
		case rbacv1.ServiceAccountKind:
			ns := s.Namespace
			if ns == "" {
				ns = bindingNamespace
			}
			if ns != "" && u.GetName() == serviceaccount.MakeUsername(ns, s.Name) {
				return true
			}
		}
	}
	return false
}

func has(list []string, want string) bool {
	for _, v := range list {
		if v == want || v == rbacv1.VerbAll {
			return true
		}
	}
	return false
}

func ruleAllows(attrs authorizer.Attributes, rule *rbacv1.PolicyRule) bool {
	if !has(rule.Verbs, attrs.GetVerb()) {
		return false
	}
	if !attrs.IsResourceRequest() {
		path := attrs.GetPath()
		for _, u := range rule.NonResourceURLs {
			if u == rbacv1.NonResourceAll || u == path ||
				(strings.HasSuffix(u, "*") && strings.HasPrefix(path, strings.TrimSuffix(u, "*"))) {
				return true
			}
		}
		return false
	}
	if !has(rule.APIGroups, attrs.GetAPIGroup()) {
		return false
	}
	resource := attrs.GetResource()
	sub := attrs.GetSubresource()
	combined := resource
	if sub != "" {
		combined += "/" + sub
	}
	ok := false
	for _, r := range rule.Resources {
		if r == rbacv1.ResourceAll || r == combined || (sub != "" && r == "*/"+sub) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	if len(rule.ResourceNames) == 0 {
		return true
	}
	for _, n := range rule.ResourceNames {
		if n == attrs.GetName() {
			return true
		}
	}
	return false
}

// RulesFor answers SelfSubjectRulesReview.
func (a *rbacAuthorizer) RulesFor(ctx context.Context, u user.Info, ns string) ([]authorizer.ResourceRuleInfo, []authorizer.NonResourceRuleInfo, bool, error) {
	var resourceRules []authorizer.ResourceRuleInfo
	var nonResourceRules []authorizer.NonResourceRuleInfo
	a.visitRules(u, ns, func(_ string, rule *rbacv1.PolicyRule) bool {
		if len(rule.NonResourceURLs) > 0 {
			nonResourceRules = append(nonResourceRules, &authorizer.DefaultNonResourceRuleInfo{
				Verbs: rule.Verbs, NonResourceURLs: rule.NonResourceURLs})
		} else {
			resourceRules = append(resourceRules, &authorizer.DefaultResourceRuleInfo{
				Verbs: rule.Verbs, APIGroups: rule.APIGroups, Resources: rule.Resources, ResourceNames: rule.ResourceNames})
		}
		return true
	})
	return resourceRules, nonResourceRules, false, nil
}
