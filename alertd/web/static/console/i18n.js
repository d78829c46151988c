// French and English: the browser's language first, then the operator's choice (kept locally).

const TEXT = {
  fr: {
    'nav.alerts': 'Alertes', 'nav.sirens': 'Sirènes', 'signout': 'Se déconnecter', 'close': 'Fermer',
    'role.issuer': 'émetteur', 'role.operator': 'opérateur', 'role.admin': 'administrateur', 'role.approver': 'approbateur',
    'signin.title': 'Console alertd', 'signin.token': 'Jeton d’accès',
    'signin.hint': 'Jeton d’opérateur ou d’émetteur. Il n’est gardé que le temps de cet onglet.',
    'signin.submit': 'Se connecter', 'signin.refused': 'Ce jeton n’est pas reconnu.',
    'alerts.title': 'Alertes', 'alerts.none': 'Aucune alerte pour l’instant.', 'alerts.sent': 'Ordre',
    'alerts.event': 'Événement', 'alerts.state': 'État', 'alerts.area': 'Zone', 'alerts.progress': 'Diffusion',
    'alert.planning': 'en préparation', 'alert.active': 'en diffusion', 'alert.completed': 'terminée',
    'alert.cancelled': 'annulée', 'alert.updated': 'remplacée', 'alert.expired': 'expirée',
    'alert.draft': 'brouillon', 'alert.sent': 'Ordre du', 'alert.expires': 'expire le',
    'alert.awaiting_approval': 'en attente d’approbation', 'alert.rejected': 'rejetée',
    'alert.approval_expired': 'approbation expirée', 'alert.refused': 'refusée (contenu modifié)',
    'approval.created': 'créée par {who} ({cell})', 'approval.approved': 'approuvée par {who} ({cell}) le {at}',
    'approval.rejected': 'rejetée par {who} ({cell}) : {reason}', 'approval.until': 'en attente d’approbation jusqu’à {at}',
    'approval.expired': 'personne ne l’a approuvée avant {at} : elle ne sera jamais diffusée',
    'approval.audience': 'Destinataires prévus : {counts}',
    'estimate.time': 'Jusqu’au dernier message : {channels}', 'estimate.unknown': 'durée inconnue',
    'estimate.late': '{kind} : le dernier message partirait après l’expiration de l’alerte, et ne partira donc jamais',
    'reject.button': 'Rejeter', 'reject.reason': 'Pourquoi rejeter « {event} » ?',
    'cancel.awaiting': 'L’annulation attend l’approbation d’une seconde personne.',
    'cap.Extreme': 'extrême', 'cap.Severe': 'grave', 'cap.Moderate': 'modérée', 'cap.Minor': 'mineure',
    'cap.Immediate': 'immédiate', 'cap.Expected': 'attendue', 'cap.Future': 'future', 'cap.Past': 'passée',
    'cap.Observed': 'observée', 'cap.Likely': 'probable', 'cap.Possible': 'possible', 'cap.Unlikely': 'peu probable',
    'cap.Unknown': 'inconnue',
    'status.actual': 'réelle', 'status.exercise': 'exercice', 'status.system': 'système', 'status.test': 'test',
    'status.draft': 'brouillon',
    'state.pending': 'en attente', 'state.sending': 'en cours', 'state.sent': 'envoyés',
    'state.delivered': 'remis', 'state.failed': 'échecs', 'state.expired': 'expirés', 'state.cancelled': 'annulés',
    'counts.title': 'Messages par canal', 'counts.channel': 'Canal', 'counts.total': 'Total',
    'counts.none': 'Aucun message planifié pour l’instant.',
    'reach.title': 'Courbe de diffusion', 'reach.sent': 'envoyés', 'reach.delivered': 'remis',
    'reach.empty': 'Pas encore de mesure.',
    'area.title': 'Zone et sirènes', 'area.zones': 'Zones :', 'area.shapes': 'zone dessinée',
    'texts.title': 'Messages envoyés', 'texts.sms': '{segments} SMS, {encoding}', 'texts.size': '{size} octets',
    'kind.sms': 'SMS', 'kind.push': 'Notification', 'kind.siren': 'Sirène',
    'failed.title': 'Échecs de remise', 'failed.channel': 'Canal', 'failed.target': 'Destinataire',
    'failed.address': 'Adresse', 'failed.attempts': 'Essais', 'failed.reason': 'Raison', 'failed.at': 'Quand',
    'failed.none': 'Aucun échec.', 'failed.more': 'et {n} autres.',
    'approve.button': 'Approuver et diffuser',
    'approve.confirm': 'Diffuser maintenant « {event} » ({area}) comme alerte réelle ?',
    'cancel.button': 'Annuler l’alerte', 'cancel.title': 'Annuler l’alerte',
    'cancel.confirm': 'Annuler « {event} » ({area}) ? Les messages pas encore partis ne le seront pas, et les sirènes reçoivent l’ordre d’arrêt.',
    'cancel.keep': 'Ne pas annuler', 'cancel.do': 'Oui, annuler', 'cancel.done': 'Annulée le {at} par {who}.',
    'cancel.stopped': '{n} message(s) retenu(s), {sirens} sirène(s) arrêtée(s).', 'cancel.someone': 'un autre opérateur',
    'siren.failed': 'commande non exécutée', 'siren.retrying': 'nouvel essai prévu',
    'siren.commanded': 'commande en cours', 'siren.activated': 'déclenchée',
    'siren.ready': 'prête', 'siren.fault': 'en défaut', 'siren.sabotage': 'sabotage',
    'siren.no_heartbeat': 'muette', 'siren.silent_since': 'aucune nouvelle depuis le {at}',
    'siren.never_heard': 'jamais entendue', 'siren.health': 'secteur {mains} · batterie {battery}',
    'yes': 'oui', 'no': 'non',
    'command.activate': 'déclenchement', 'command.cancel': 'arrêt', 'command.test': 'essai',
    'command.silent_test': 'essai silencieux',
    'last.pending': 'en attente', 'last.sending': 'en cours', 'last.sent': 'envoyée', 'last.delivered': 'confirmée',
    'last.failed': 'échouée', 'last.expired': 'expirée', 'last.cancelled': 'annulée',
    'sirens.title': 'Sirènes', 'sirens.hint': 'État d’après la dernière commande de chaque sirène (une commande en échec ou en attente passe en premier), puis les signes de vie des passerelles.',
    'sirens.status': 'État', 'sirens.label': 'Nom', 'sirens.id': 'Identifiant', 'sirens.zone': 'Zone',
    'sirens.last': 'Dernière commande', 'sirens.error': 'Erreur', 'sirens.none': 'Aucune sirène.',
    'sirens.forbidden': 'Votre rôle ne permet pas de voir les sirènes.',
  },
  en: {
    'nav.alerts': 'Alerts', 'nav.sirens': 'Sirens', 'signout': 'Sign out', 'close': 'Close',
    'role.issuer': 'issuer', 'role.operator': 'operator', 'role.admin': 'admin', 'role.approver': 'approver',
    'signin.title': 'alertd console', 'signin.token': 'Access token',
    'signin.hint': 'An operator or issuer token. It is kept for this tab only.',
    'signin.submit': 'Sign in', 'signin.refused': 'This token is not recognised.',
    'alerts.title': 'Alerts', 'alerts.none': 'No alert yet.', 'alerts.sent': 'Ordered',
    'alerts.event': 'Event', 'alerts.state': 'State', 'alerts.area': 'Area', 'alerts.progress': 'Fan-out',
    'alert.planning': 'planning', 'alert.active': 'sending', 'alert.completed': 'completed',
    'alert.cancelled': 'cancelled', 'alert.updated': 'replaced', 'alert.expired': 'expired',
    'alert.awaiting_approval': 'awaiting approval', 'alert.rejected': 'rejected',
    'alert.approval_expired': 'approval expired', 'alert.refused': 'refused (content changed)',
    'approval.created': 'created by {who} ({cell})', 'approval.approved': 'approved by {who} ({cell}) at {at}',
    'approval.rejected': 'rejected by {who} ({cell}): {reason}', 'approval.until': 'awaiting approval until {at}',
    'approval.expired': 'nobody approved it before {at}: it will never be sent',
    'approval.audience': 'Planned recipients: {counts}',
    'estimate.time': 'Until the last message: {channels}', 'estimate.unknown': 'time unknown',
    'estimate.late': '{kind}: the last message would go out after the alert expires, so it never will',
    'reject.button': 'Reject', 'reject.reason': 'Why reject “{event}”?',
    'cancel.awaiting': 'The cancel awaits a second person’s approval.',
    'alert.draft': 'draft', 'alert.sent': 'Ordered', 'alert.expires': 'expires',
    'cap.Extreme': 'extreme', 'cap.Severe': 'severe', 'cap.Moderate': 'moderate', 'cap.Minor': 'minor',
    'cap.Immediate': 'immediate', 'cap.Expected': 'expected', 'cap.Future': 'future', 'cap.Past': 'past',
    'cap.Observed': 'observed', 'cap.Likely': 'likely', 'cap.Possible': 'possible', 'cap.Unlikely': 'unlikely',
    'cap.Unknown': 'unknown',
    'status.actual': 'actual', 'status.exercise': 'exercise', 'status.system': 'system', 'status.test': 'test',
    'status.draft': 'draft',
    'state.pending': 'pending', 'state.sending': 'sending', 'state.sent': 'sent', 'state.delivered': 'delivered',
    'state.failed': 'failed', 'state.expired': 'expired', 'state.cancelled': 'cancelled',
    'counts.title': 'Messages per channel', 'counts.channel': 'Channel', 'counts.total': 'Total',
    'counts.none': 'No message planned yet.',
    'reach.title': 'Reach', 'reach.sent': 'sent', 'reach.delivered': 'delivered', 'reach.empty': 'No measure yet.',
    'area.title': 'Area and sirens', 'area.zones': 'Zones:', 'area.shapes': 'drawn area',
    'texts.title': 'Messages as sent', 'texts.sms': '{segments} SMS, {encoding}', 'texts.size': '{size} bytes',
    'kind.sms': 'SMS', 'kind.push': 'Push', 'kind.siren': 'Siren',
    'failed.title': 'Failed deliveries', 'failed.channel': 'Channel', 'failed.target': 'Recipient',
    'failed.address': 'Address', 'failed.attempts': 'Attempts', 'failed.reason': 'Reason', 'failed.at': 'When',
    'failed.none': 'No failure.', 'failed.more': 'and {n} more.',
    'approve.button': 'Approve and send',
    'approve.confirm': 'Send “{event}” ({area}) now as an actual alert?',
    'cancel.button': 'Cancel alert', 'cancel.title': 'Cancel the alert',
    'cancel.confirm': 'Cancel “{event}” ({area})? Messages not yet sent will not be, and the sirens are told to stop.',
    'cancel.keep': 'Keep it', 'cancel.do': 'Yes, cancel', 'cancel.done': 'Cancelled at {at} by {who}.',
    'cancel.stopped': '{n} message(s) held back, {sirens} siren(s) stopped.', 'cancel.someone': 'another operator',
    'siren.failed': 'command not carried out', 'siren.retrying': 'retry planned',
    'siren.commanded': 'command on its way', 'siren.activated': 'activated',
    'siren.ready': 'ready', 'siren.fault': 'fault', 'siren.sabotage': 'sabotage',
    'siren.no_heartbeat': 'silent', 'siren.silent_since': 'no heartbeat since {at}',
    'siren.never_heard': 'never heard from', 'siren.health': 'mains {mains} · battery {battery}',
    'yes': 'yes', 'no': 'no',
    'command.activate': 'activation', 'command.cancel': 'stop', 'command.test': 'test',
    'command.silent_test': 'silent test',
    'last.pending': 'pending', 'last.sending': 'sending', 'last.sent': 'sent', 'last.delivered': 'acknowledged',
    'last.failed': 'failed', 'last.expired': 'expired', 'last.cancelled': 'cancelled',
    'sirens.title': 'Sirens', 'sirens.hint': 'State from each siren’s last command (a failed or unfinished one comes first), then the gateways’ heartbeats.',
    'sirens.status': 'State', 'sirens.label': 'Name', 'sirens.id': 'Id', 'sirens.zone': 'Zone',
    'sirens.last': 'Last command', 'sirens.error': 'Error', 'sirens.none': 'No siren.',
    'sirens.forbidden': 'Your role may not see the sirens.',
  },
};
const KEY = 'alertd.lang';

let current = localStorage.getItem(KEY) || ((navigator.language || 'fr').toLowerCase().startsWith('fr') ? 'fr' : 'en');

export function lang() {
  return current;
}

export function setLang(value) {
  current = value;
  localStorage.setItem(KEY, value);
}

// An unknown key shows its last part: a state added to the API later still reads.
export function t(key, vars = {}) {
  const text = TEXT[current][key] ?? key.split('.').pop();
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

export function translatePage() {
  document.documentElement.lang = current;
  for (const el of document.querySelectorAll('[data-t]')) el.textContent = t(el.dataset.t);
}

export function number(n) {
  return new Intl.NumberFormat(current).format(n);
}

export function money(amount, currency) {
  return new Intl.NumberFormat(current, {style: 'currency', currency}).format(amount);
}

export function percent(share) {
  return new Intl.NumberFormat(current, {style: 'percent'}).format(share);
}

export function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min${seconds % 60 ? ` ${Math.round(seconds % 60)}` : ''}`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.round((seconds % 3600) / 60)).padStart(2, '0')}`;
}

export function dateTime(iso) {
  return new Date(iso).toLocaleString(current, {dateStyle: 'short', timeStyle: 'medium'});
}
