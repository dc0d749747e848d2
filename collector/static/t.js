// pixeltrack page-view snippet. Paste on every page:
//   <script async src="https://COLLECTOR/t.js" data-site="SITE_KEY"></script>
// No dependencies. Reports a page view on load and on every in-page
// navigation, with sendBeacon (POST /r) or an image (GET /r.gif).
//
// Served as written minus whole-line comments, indentation and blank lines
// (collector/site.py), and it must stay under 2 KB that way
// (tests/test_site_collector.py): so short names, no spaces where none are
// needed, and every comment on a line of its own.
// Names: w window, d document, N navigator, L location, H history,
// E "addEventListener", K the site key, B the collector's base URL.
(function(w,d,N,L,H,E){
  "use strict";
  var s=d.currentScript||d.querySelector("script[data-site]");
  if(!s)return;
  var K=s.getAttribute("data-site")||"",B=s.src.replace(/\/t\.js([?#].*)?$/,""),f=0,b,i=1,n,c,v,m;
  // f, the key's flags: byte 0 is version and kind, then a varint site id,
  // then a varint flags+1 (see pixeltrack/tokens.py); 0 if unreadable.
  try{
    b=atob(K.replace(/-/g,"+").replace(/_/g,"/"));
    for(n=2;n--;){
      v=0;m=1;
      do{c=b.charCodeAt(i++);v+=(c&127)*m;m*=128}while(c>127&&i<b.length)
    }
    f=v&&v-1
  }catch(e){}
  // X cookie-less, Y hash changes are page views, P personal (contact kept),
  // A blind (no identity at all), Q Do Not Track / Global Privacy Control
  var X=f&1,Y=f&2,P=!(f&48),A=f&32,Q=N.doNotTrack=="1"||w.doNotTrack=="1"||N.globalPrivacyControl===true;
  // DNT/GPC: tracking off; or blind if the site says so (flag 4); no effect with flag 8
  if(Q&&!(f&8)){
    if(!(f&4))return;
    A=1
  }

  // cookie k's value, or ""
  function g(k){
    var r=d.cookie.match("(?:^|; )"+k+"=([^;]*)");
    return r?r[1]:""
  }
  // Set cookie k for t days on the widest domain of the site that takes it
  // (example.com for www.example.com; co.uk is refused, so shop.co.uk), at
  // last host-only (j=0). Which domain takes it is tried with a throwaway
  // pt_t cookie of a fresh value: trying k itself would look accepted when an
  // older k of the same value is already there, and k would never be renewed.
  // Returns v once k reads back as v, else "".
  function S(k,v,t){
    var p=L.hostname.split("."),j=p.length,x,z=""+Math.random();
    while(j--){
      x=(j?"; domain="+p.slice(j-1).join("."):"")+"; path=/; max-age=";
      d.cookie="pt_t="+z+x+9;
      if(g("pt_t")==z){
        d.cookie="pt_t="+x+0;
        d.cookie=k+"="+v+x+t*864e2+"; samesite=lax"+(L.protocol=="https:"?"; secure":"");
        return g(k)==v?v:""
      }
    }
    return ""
  }

  // Contact from a tracked e-mail click: keep it, then clean the address bar
  // before anything reports the URL (history is not wrapped yet: no view).
  var q=L.search.match(/[?&]pt_c=([^&#]*)/),V="",C="",l,a,j;
  if(q)H.replaceState(H.state,"",L.href.replace(/([?&])pt_c=[^&#]*&?/,"$1").replace(/[?&](#|$)/,"$1"));
  if(!A){
    // cookie-less: the contact for this view only
    if(X)C=P&&q?q[1]:"";
    else{
      // anonymous visitor id (24 hex digits), 12 months, refreshed on every visit
      if(!(v=g("pt_v")))for(a=crypto.getRandomValues(new Uint8Array(12)),j=0;j<12;j++)v+=(a[j]+256).toString(16).slice(1);
      V=S("pt_v",v,365);
      // the contact, 10 years
      if(P)C=q?S("pt_c",q[1],3650)||q[1]:g("pt_c")
    }
  }

  // A page view, once per URL (l: the last URL reported, the next referrer)
  function T(){
    var u=L.href,o,k,r=[];
    if(!Y)u=u.split("#")[0];
    if(u==l)return;
    o={k:K,u:u,t:d.title,r:l||d.referrer,s:screen.width+"x"+screen.height,l:N.language||"",v:V,c:C,p:+Q};
    l=u;
    if(N.sendBeacon&&N.sendBeacon(B+"/r",JSON.stringify(o)))return;
    for(k in o)r.push(k+"="+encodeURIComponent(o[k]));
    new Image().src=B+"/r.gif?"+r.join("&")
  }
  function D(){setTimeout(T)}
  // single-page applications: every history change is a page view
  ["pushState","replaceState"].forEach(function(n){
    var o=H[n];
    H[n]=function(){
      var r=o.apply(this,arguments);
      D();
      return r
    }
  });
  w[E]("popstate",D);
  if(Y)w[E]("hashchange",D);
  // a prerendered page counts when it is shown
  if(d.prerendering)d[E]("prerenderingchange",T,{once:true});
  else T()
})(window,document,navigator,location,history,"addEventListener");
